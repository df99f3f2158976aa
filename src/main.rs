fn main() {
    println!("pika-remedy");
}

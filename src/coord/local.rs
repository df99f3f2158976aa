//! `Local`: embedded in-process lock plus a JSON record file written atomically.

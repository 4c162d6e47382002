// A Rust cdylib for test_symbols.c: what rustc exports (a function and a static, under the
// anonymous version script rustc writes) resolves without the loader's lock, as dlsym does.
#[no_mangle]
pub extern "C" fn rs_version() -> i32 {
    1
}

#[no_mangle]
pub static RS_DATA: i32 = 7;

#[no_mangle]
pub extern "C" fn rs_thread_name_len() -> usize {
    std::thread::current().name().map_or(0, |n| n.len())
}

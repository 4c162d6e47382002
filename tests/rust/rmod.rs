// Test module in Rust: a cdylib built by rustc alone (no crates), plain unless one of these
// is given with --cfg: `thread_current` (touch() calls std::thread::current(), which leaves a
// pthread-key destructor for the calling thread in this version's code) or `tl_drop`
// (touch() uses a thread_local! whose value has Drop, a thread-exit destructor). The build
// sets --cfg 'hm_version="N"' to tell the versions apart.

#[cfg(hm_version = "1")]
const VERSION: i32 = 1;
#[cfg(hm_version = "2")]
const VERSION: i32 = 2;
#[cfg(hm_version = "3")]
const VERSION: i32 = 3;

#[no_mangle]
pub extern "C" fn version() -> i32 {
    VERSION
}

#[cfg(thread_current)]
#[no_mangle]
pub extern "C" fn touch() -> i32 {
    // std keeps the handle of a thread it did not start behind a pthread key.
    let me = std::thread::current();
    if me.name() == Some("no such thread") {
        return -1;
    }
    VERSION
}

#[cfg(tl_drop)]
mod per_thread {
    use std::cell::Cell;
    pub struct Tally(pub Cell<i32>);
    impl Drop for Tally {
        fn drop(&mut self) {
            self.0.set(-1);
        }
    }
    thread_local! {
        pub static CALLS: Tally = Tally(Cell::new(0));
    }
}

#[cfg(tl_drop)]
#[no_mangle]
pub extern "C" fn touch() -> i32 {
    per_thread::CALLS.with(|t| t.0.set(t.0.get() + 1));
    VERSION
}

#[cfg(not(any(thread_current, tl_drop)))]
#[no_mangle]
pub extern "C" fn touch() -> i32 {
    VERSION
}

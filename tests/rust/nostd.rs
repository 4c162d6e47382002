// Test module in Rust without std (#![no_std], built with -C panic=abort): no thread state
// of std's, so none of its destructors, and nothing for the lint to find. The build sets
// --cfg 'hm_version="N"'.
#![no_std]

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(hm_version = "1")]
const VERSION: i32 = 1;
#[cfg(hm_version = "2")]
const VERSION: i32 = 2;

#[no_mangle]
pub extern "C" fn version() -> i32 {
    VERSION
}

#[no_mangle]
pub extern "C" fn touch() -> i32 {
    VERSION
}

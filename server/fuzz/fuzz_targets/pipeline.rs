#![no_main]
use libfuzzer_sys::fuzz_target;

mod capped_alloc;

#[global_allocator]
static ALLOC: capped_alloc::CappedAlloc = capped_alloc::CappedAlloc;

fuzz_target!(|data: &[u8]| {
    capped_alloc::arm(smbdirect_server::fuzz::ALLOC_LIMIT);
    smbdirect_server::fuzz::pipeline(data);
    if let Some(size) = capped_alloc::disarm() {
        panic!("an allocation of {size} bytes, over the limit of {}", smbdirect_server::fuzz::ALLOC_LIMIT);
    }
});

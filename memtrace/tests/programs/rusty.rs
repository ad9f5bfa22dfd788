// Rust names for the symbolizer to demangle: leaks a 3000-byte boxed slice from leak_buffer.
#[inline(never)]
fn leak_buffer() -> &'static mut [u8] {
    Box::leak(vec![7u8; 3000].into_boxed_slice())
}

fn main() {
    std::hint::black_box(leak_buffer());
}

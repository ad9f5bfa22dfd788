// A Rust program built in release mode (no frame pointers): leaks through Box::leak, a Vec's
// growth, and mem::forget, each from an #[inline(never)] function called from main.
use std::hint::black_box;

#[inline(never)]
fn leak_boxed_table() -> &'static mut [u64; 300] {
    Box::leak(Box::new([7u64; 300]))
}

#[inline(never)]
fn grow_list(count: u32) -> Vec<u32> {
    let mut list = Vec::new();
    for value in 0..count {
        list.push(black_box(value));
    }
    list
}

#[inline(never)]
fn leak_grown_list() {
    let list = grow_list(black_box(1000));
    std::mem::forget(list);
}

#[inline(never)]
fn forget_text() {
    let text = "memtrace ".repeat(black_box(300));
    std::mem::forget(text);
}

fn main() {
    black_box(leak_boxed_table());
    leak_grown_list();
    forget_text();
}

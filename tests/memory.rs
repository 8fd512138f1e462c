//! The memory an apply takes is bounded by the size of one entry's headers,
//! whatever the layer holds: measured with a counting allocator (this test
//! binary's only test, so nothing else allocates meanwhile), on layers
//! streamed from generators so the input itself takes no memory.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::rawtar::{pax_record, Hdr, Tar};
use common::*;
use erofs_snapshotter::{ApplyOptions, ErrorKind};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, counting bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's layout is valid.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: ptr came from alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap growth (bytes) while `f` runs.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

/// A stream of `head`, then `unit` `times` times, then `tail`.
struct Repeat {
    parts: Vec<(Vec<u8>, usize)>,
    part: usize,
    pos: usize,
    done: usize,
}

impl Repeat {
    fn new(parts: Vec<(Vec<u8>, usize)>) -> Repeat {
        Repeat {
            parts,
            part: 0,
            pos: 0,
            done: 0,
        }
    }
}

impl Read for Repeat {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some((unit, times)) = self.parts.get(self.part) {
            if self.done == *times {
                self.part += 1;
                self.done = 0;
                continue;
            }
            let n = (unit.len() - self.pos).min(buf.len());
            buf[..n].copy_from_slice(&unit[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == unit.len() {
                self.pos = 0;
                self.done += 1;
            }
            return Ok(n);
        }
        Ok(0)
    }
}

fn pax_header(records: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in records {
        data.extend(pax_record(k, v));
    }
    Tar::new()
        .entry(&Hdr::new("PaxHeaders/x", b'x', data.len() as u64), &data)
        .0
}

#[test]
fn apply_memory_is_bounded_by_one_entrys_headers() {
    let env = Env::new();
    let s = env.open();
    let limit = 24 << 20;
    let apply = |key: &str, input: &mut (dyn Read + Send)| {
        s.prepare(key, "", &no_labels()).unwrap();
        peak_during(|| s.apply(key, input, &ApplyOptions::default()))
    };
    let file = Tar::new().file("f", b"x").end();

    // 1,024 PAX headers of 1 MiB before one entry: 2 GiB of RSS before.
    let pax = pax_header(&[(b"comment", &vec![b'v'; (1 << 20) - 64])]);
    let (r, peak) = apply(
        "pax",
        &mut Repeat::new(vec![(pax, 1024), (file.clone(), 1)]),
    );
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("two PAX extended headers"), "{e}");
    assert!(peak < limit, "peak heap {peak}");
    eprintln!("1,024 PAX headers of 1 MiB: refused, peak heap {peak} bytes");

    // 256 GNU long names of 4 MiB: 1 GiB before.
    let mut name = vec![b'n'; 4 << 20];
    name.push(0);
    let long = Tar::new()
        .entry(&Hdr::new("././@LongLink", b'L', name.len() as u64), &name)
        .0;
    let (r, peak) = apply(
        "long",
        &mut Repeat::new(vec![(long, 256), (file.clone(), 1)]),
    );
    let e = r.unwrap_err();
    assert!(
        e.message()
            .contains("a GNU long name of 4194305 bytes; at most 1048576"),
        "{e}"
    );
    assert!(peak < limit, "peak heap {peak}");
    eprintln!("256 GNU long names of 4 MiB: refused, peak heap {peak} bytes");

    // The largest headers one entry may carry, then 256 MiB of data: applied,
    // the data streamed.
    let mut name = ("d/".repeat(400) + "f").into_bytes();
    name.push(0);
    let head = [
        Tar::new()
            .entry(&Hdr::new("././@LongLink", b'L', name.len() as u64), &name)
            .0,
        pax_header(&[
            (b"comment", &vec![b'c'; (1 << 20) - 64]),
            (b"SCHILY.xattr.user.k", b"v"),
        ]),
        Hdr::file("ignored", 256 << 20).block().to_vec(),
    ]
    .concat();
    let (r, peak) = apply(
        "max",
        &mut Repeat::new(vec![
            (head, 1),
            (vec![b'z'; 1 << 20], 256),
            (vec![0u8; 1024], 1),
        ]),
    );
    r.unwrap();
    assert!(peak < limit, "peak heap {peak}");
    eprintln!("1 MiB of headers and a 256 MiB file: applied, peak heap {peak} bytes");
}

//! A tar writer that writes exactly what it is told, malformed or hostile
//! archives included (the `tar` crate refuses most of those).
#![allow(dead_code)]

pub const BLOCK: usize = 512;

/// One ustar header block; fields are raw bytes, written as given.
#[derive(Clone)]
pub struct Hdr {
    pub name: Vec<u8>,
    pub mode: Vec<u8>,
    pub uid: Vec<u8>,
    pub gid: Vec<u8>,
    pub size: Vec<u8>,
    pub mtime: Vec<u8>,
    pub typeflag: u8,
    pub link: Vec<u8>,
    pub magic: Vec<u8>,
    pub devmajor: Vec<u8>,
    pub devminor: Vec<u8>,
    pub prefix: Vec<u8>,
    /// Bytes 500..512 (the star trailer lives at 508).
    pub tail: Vec<u8>,
}

/// A numeric field: octal when it fits, else GNU base-256.
pub fn numeric(width: usize, v: u64) -> Vec<u8> {
    if v < 1u64 << (3 * (width - 1)) {
        return octal(width, v);
    }
    let mut out = vec![0u8; width];
    let mut x = v;
    for b in out.iter_mut().rev() {
        *b = x as u8;
        x >>= 8;
    }
    out[0] |= 0x80;
    out
}

pub fn octal(width: usize, v: u64) -> Vec<u8> {
    let mut s = format!("{v:0w$o}", w = width - 1).into_bytes();
    s.push(0);
    s
}

impl Hdr {
    pub fn new(name: &str, typeflag: u8, size: u64) -> Hdr {
        Hdr {
            name: name.as_bytes().to_vec(),
            mode: octal(8, if typeflag == b'5' { 0o755 } else { 0o644 }),
            uid: octal(8, 0),
            gid: octal(8, 0),
            size: octal(12, size),
            mtime: octal(12, 1_600_000_000),
            typeflag,
            link: Vec::new(),
            magic: b"ustar\x0000".to_vec(),
            devmajor: octal(8, 0),
            devminor: octal(8, 0),
            prefix: Vec::new(),
            tail: Vec::new(),
        }
    }

    pub fn file(name: &str, size: u64) -> Hdr {
        Hdr::new(name, b'0', size)
    }

    pub fn dir(name: &str) -> Hdr {
        Hdr::new(name, b'5', 0)
    }

    pub fn link(name: &str, typeflag: u8, target: &str) -> Hdr {
        let mut h = Hdr::new(name, typeflag, 0);
        h.link = target.as_bytes().to_vec();
        h
    }

    pub fn mode(mut self, mode: u32) -> Hdr {
        self.mode = octal(8, u64::from(mode));
        self
    }

    pub fn block(&self) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        let mut put = |at: usize, len: usize, v: &[u8]| {
            let n = v.len().min(len);
            h[at..at + n].copy_from_slice(&v[..n]);
        };
        put(0, 100, &self.name);
        put(100, 8, &self.mode);
        put(108, 8, &self.uid);
        put(116, 8, &self.gid);
        put(124, 12, &self.size);
        put(136, 12, &self.mtime);
        put(157, 100, &self.link);
        put(257, 8, &self.magic);
        put(329, 8, &self.devmajor);
        put(337, 8, &self.devminor);
        put(345, 155, &self.prefix);
        put(500, 12, &self.tail);
        h[156] = self.typeflag;
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        h
    }
}

pub fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut out = format!("{len} ").into_bytes();
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// An archive being written.
#[derive(Default, Clone)]
pub struct Tar(pub Vec<u8>);

impl Tar {
    pub fn new() -> Tar {
        Tar(Vec::new())
    }

    fn pad(&mut self) {
        let rem = self.0.len() % BLOCK;
        if rem != 0 {
            self.0.resize(self.0.len() + BLOCK - rem, 0);
        }
    }

    /// A header and `data` (padded).
    pub fn entry(mut self, h: &Hdr, data: &[u8]) -> Tar {
        self.0.extend_from_slice(&h.block());
        self.0.extend_from_slice(data);
        self.pad();
        self
    }

    pub fn file(self, name: &str, data: &[u8]) -> Tar {
        self.entry(&Hdr::file(name, data.len() as u64), data)
    }

    pub fn dir(self, name: &str) -> Tar {
        self.entry(&Hdr::dir(name), b"")
    }

    /// An extended header of type `typeflag` ('x', 'g') with `records`.
    pub fn pax_typed(self, typeflag: u8, records: &[(&str, &[u8])]) -> Tar {
        let mut data = Vec::new();
        for (k, v) in records {
            data.extend(pax_record(k.as_bytes(), v));
        }
        self.entry(
            &Hdr::new("PaxHeaders/x", typeflag, data.len() as u64),
            &data,
        )
    }

    pub fn pax(self, records: &[(&str, &[u8])]) -> Tar {
        self.pax_typed(b'x', records)
    }

    /// A GNU long name ('L') or link ('K') record.
    pub fn gnu_long(self, typeflag: u8, value: &[u8]) -> Tar {
        let mut data = value.to_vec();
        data.push(0);
        let mut h = Hdr::new("././@LongLink", typeflag, data.len() as u64);
        h.magic = b"ustar  \0".to_vec();
        self.entry(&h, &data)
    }

    pub fn raw(mut self, bytes: &[u8]) -> Tar {
        self.0.extend_from_slice(bytes);
        self
    }

    /// The end-of-archive marker.
    pub fn end(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 2 * BLOCK]);
        self.0
    }
}

//! Where the fields of a GGUF header lie in the bytes of a file: the map the GGUF properties
//! use to set one field to a hostile value.
//!
//! This reads only files the tests wrote themselves (valid GGUF v2/v3, as candle's
//! `gguf_file::write` writes them), so it panics on anything else; the loader under test is
//! never this code.

/// What a field of the header holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// The format version after the magic (u32).
    Version,
    /// The number of tensors (u64).
    TensorCount,
    /// The number of metadata entries (u64).
    KvCount,
    /// The length of a metadata key (u64).
    KeyLen,
    /// The type of a metadata value (u32).
    ValueType,
    /// The length of a string value, top-level or in an array (u64).
    StringLen,
    /// The element type of an array (u32).
    ArrayType,
    /// The element count of an array (u64).
    ArrayLen,
    /// A top-level integer value (its own width).
    Integer,
    /// The length of a tensor's name (u64).
    NameLen,
    /// A tensor's number of dimensions (u32).
    Dims,
    /// One dimension of a tensor (u64).
    Dim,
    /// A tensor's ggml type (u32).
    DType,
    /// A tensor's offset into the data section (u64).
    Offset,
}

/// One field: what it holds, where it starts, how many bytes wide it is (little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) kind: Kind,
    pub(crate) pos: usize,
    pub(crate) width: usize,
}

impl Field {
    /// The field's value in `bytes`.
    pub(crate) fn get(&self, bytes: &[u8]) -> u64 {
        let mut le = [0u8; 8];
        le[..self.width].copy_from_slice(&bytes[self.pos..self.pos + self.width]);
        u64::from_le_bytes(le)
    }

    /// Writes `value` (its low `width` bytes) over the field.
    pub(crate) fn set(&self, bytes: &mut [u8], value: u64) {
        bytes[self.pos..self.pos + self.width].copy_from_slice(&value.to_le_bytes()[..self.width]);
    }
}

/// Every field of a header, in file order, and where the header ends.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub(crate) fields: Vec<Field>,
    /// The first byte after the tensor directory (before the alignment padding).
    pub(crate) header_end: usize,
}

impl Layout {
    /// The layout of `bytes`, a valid GGUF v2 or v3 file.
    pub(crate) fn of(bytes: &[u8]) -> Self {
        let mut c = Cursor {
            bytes,
            pos: 0,
            fields: Vec::new(),
        };
        assert_eq!(&bytes[..4], b"GGUF", "not a GGUF file");
        c.pos = 4;
        let version = c.field(Kind::Version, 4);
        assert!(matches!(version, 2 | 3), "version {version}: only v2/v3");
        let tensors = c.field(Kind::TensorCount, 8);
        let kvs = c.field(Kind::KvCount, 8);
        for _ in 0..kvs {
            c.string(Kind::KeyLen);
            let value_type = c.field(Kind::ValueType, 4);
            c.value(value_type, true);
        }
        for _ in 0..tensors {
            c.string(Kind::NameLen);
            let dims = c.field(Kind::Dims, 4);
            for _ in 0..dims {
                c.field(Kind::Dim, 8);
            }
            c.field(Kind::DType, 4);
            c.field(Kind::Offset, 8);
        }
        Self {
            header_end: c.pos,
            fields: c.fields,
        }
    }

    /// The kinds of field this header has, each once, in a fixed order.
    pub(crate) fn kinds(&self) -> Vec<Kind> {
        let mut kinds: Vec<Kind> = self.fields.iter().map(|f| f.kind).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// The fields of the entry named `name`: a metadata key (`name_kind` [`Kind::KeyLen`]) or a
    /// tensor ([`Kind::NameLen`]); those after its name, up to the next entry.
    pub(crate) fn entry(&self, bytes: &[u8], name_kind: Kind, name: &str) -> &[Field] {
        let names = |f: &Field| matches!(f.kind, Kind::KeyLen | Kind::NameLen);
        let start = self
            .fields
            .iter()
            .position(|f| {
                let at = f.pos + f.width;
                f.kind == name_kind
                    && bytes.get(at..at + name.len()) == Some(name.as_bytes())
                    && f.get(bytes) == name.len() as u64
            })
            .unwrap_or_else(|| panic!("no entry `{name}`"))
            + 1;
        let len = self.fields[start..]
            .iter()
            .take_while(|f| !names(f))
            .count();
        &self.fields[start..start + len]
    }

    /// The fields of one kind, in file order.
    pub(crate) fn of_kind(&self, kind: Kind) -> Vec<Field> {
        self.fields
            .iter()
            .filter(|f| f.kind == kind)
            .copied()
            .collect()
    }
}

/// Reads a header front to back, recording each field it passes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    fields: Vec<Field>,
}

impl Cursor<'_> {
    /// Records a field of `width` bytes at the cursor and returns its value.
    fn field(&mut self, kind: Kind, width: usize) -> u64 {
        let field = Field {
            kind,
            pos: self.pos,
            width,
        };
        self.pos += width;
        self.fields.push(field);
        field.get(self.bytes)
    }

    /// A length-prefixed string.
    fn string(&mut self, len_kind: Kind) {
        let len = self.field(len_kind, 8);
        self.pos += usize::try_from(len).expect("string length");
    }

    /// A value of GGUF type `value_type`; `top` for a metadata value (not an array element),
    /// whose integers are recorded.
    fn value(&mut self, value_type: u64, top: bool) {
        let width = match value_type {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => return self.string(Kind::StringLen),
            9 => {
                let element_type = self.field(Kind::ArrayType, 4);
                let len = self.field(Kind::ArrayLen, 8);
                for _ in 0..len {
                    self.value(element_type, false);
                }
                return;
            }
            t => panic!("value type {t} in a file we wrote"),
        };
        let integer = !matches!(value_type, 6 | 7 | 12);
        if top && integer {
            self.field(Kind::Integer, width);
        } else {
            self.pos += width;
        }
    }
}

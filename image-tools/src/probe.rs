//! Disk-image formats, and what an image file refers to besides itself, read from its headers
//! before `qemu-img` ever opens it.
//!
//! [`ImageFormat`] is the closed list of formats an import accepts. [`sniff`] guesses one from magic
//! bytes. [`outside_references`] reads the headers of a qcow2, VMDK or VHD file (bounded reads, no
//! allocation from a header's numbers above 1 MiB) and reports every way its data could come from
//! another file:
//!
//! - qcow2: a backing file (header), an external data file (incompatible feature bit 2, or the
//!   data-file header extension);
//! - VMDK: a text descriptor (its extents are other files by definition); a binary (`KDMV`) file
//!   whose header gives no capacity (qemu then opens its embedded descriptor's extents: found by
//!   experiment with qemu-img 10.0); an embedded descriptor with an extent that is not a plain
//!   `SPARSE` file name, more than one extent, or a `parentFileNameHint` (a backing file);
//!   `COWD` (VMDK 3) is refused as unsupported;
//! - VHD (`vpc`): a differencing disk (its parent is another file).
//!
//! VHDX and VDI are not parsed here: qemu does not open their parents (VHDX differencing images
//! are refused by qemu, VDI names parents by UUID only), and the import additionally opens every
//! image with `backing: null` and checks `qemu-img info` (see `import`).
//!
//! [`layout_of`] tells a raw disk (partition table, boot sector, file system) from a file that is
//! no disk at all, for the controller's `master import` (the DSI may override it).
//!
//! Not guaranteed: that the file does not change between this check and qemu-img's read of it (an
//! image must not be written during its import).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The formats an import accepts. Everything else is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Raw,
    Qcow2,
    Vmdk,
    Vhdx,
    /// VHD (Virtual PC), as qemu names it.
    Vpc,
    Vdi,
}

impl ImageFormat {
    pub const ALL: [ImageFormat; 6] = [
        ImageFormat::Raw,
        ImageFormat::Qcow2,
        ImageFormat::Vmdk,
        ImageFormat::Vhdx,
        ImageFormat::Vpc,
        ImageFormat::Vdi,
    ];

    /// The name qemu-img and the command lines use.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Vmdk => "vmdk",
            ImageFormat::Vhdx => "vhdx",
            ImageFormat::Vpc => "vpc",
            ImageFormat::Vdi => "vdi",
        }
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ImageFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<ImageFormat, String> {
        ImageFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unsupported image format {s:?}: use one of {}",
                    ImageFormat::ALL.map(ImageFormat::as_str).join(", ")
                )
            })
    }
}

/// What the first bytes of a file say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    Format(ImageFormat),
    /// A disk-image format nightcast does not import (named).
    Unsupported(&'static str),
}

/// Why an image is refused: it would make qemu read another file, or it is not a supported image.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("it has a backing file, {0:?}, whose bytes would be read into the master")]
    BackingFile(String),
    #[error("its data is in an external data file, {0:?}, which would be read into the master")]
    DataFile(String),
    #[error("it is a VMDK descriptor whose extents are other files ({}), which would be read into the master", .0.join(", "))]
    Extents(Vec<String>),
    #[error("{0}")]
    Unsupported(String),
}

/// Reads up to `len` bytes at `offset` (fewer at the end of the file).
fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

fn be64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// A raw image smaller than this is not a disk (the smallest floppy image is 1.44 MB).
pub const MIN_RAW_DISK: u64 = 1 << 20;

/// How far [`disk_layout`] reads.
const LAYOUT_HEAD: usize = 0x10048;

/// What a raw image starts with, if it is a disk: a partition table, a boot sector or a file
/// system nightcast recognises by its magic bytes; `None` for anything else (a text file, an
/// archive, random bytes). Pure: `head` is the image's first bytes (64 KiB and a little more).
pub fn layout_of(head: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    [
        (512, &b"EFI PART"[..], "a GPT partition table"),
        (
            510,
            &[0x55, 0xaa][..],
            "an MBR partition table or boot sector",
        ),
        (512, &b"LABELONE"[..], "an LVM physical volume"),
        (1080, &[0x53, 0xef][..], "an ext2/3/4 file system"),
        (0, &b"XFSB"[..], "an XFS file system"),
        (0x8001, &b"CD001"[..], "an ISO 9660 file system"),
        (0x10040, &b"_BHRfS_M"[..], "a Btrfs file system"),
    ]
    .into_iter()
    .find(|(offset, magic, _)| at(*offset, magic))
    .map(|(_, _, name)| name)
}

/// [`layout_of`] the first bytes of `file`.
pub fn disk_layout(file: &File) -> io::Result<Option<&'static str>> {
    Ok(layout_of(&read_at(file, 0, LAYOUT_HEAD)?))
}

/// Recognises disk-image formats by their magic bytes; `None` means raw.
pub fn sniff(file: &File) -> io::Result<Option<Sniffed>> {
    let head = read_at(file, 0, 512)?;
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    use ImageFormat::*;
    Ok(Some(if at(0, b"QFI\xfb") {
        Sniffed::Format(Qcow2)
    } else if at(0, b"KDMV") || at(0, b"COWD") || at(0, b"# Disk DescriptorFile") {
        Sniffed::Format(Vmdk)
    } else if at(0, b"vhdxfile") {
        Sniffed::Format(Vhdx)
    } else if at(0x40, &0xbeda_107f_u32.to_le_bytes()) {
        Sniffed::Format(Vdi)
    } else if at(0, b"conectix") {
        Sniffed::Format(Vpc)
    } else if at(0, b"QED\0") {
        Sniffed::Unsupported("QED")
    } else if at(0, b"LUKS\xba\xbe") {
        Sniffed::Unsupported("LUKS")
    } else {
        return Ok(None);
    }))
}

/// Every file other than itself that opening `file` as `format` would read, as a refusal; `Ok(())`
/// if there is none to be found in its headers.
pub fn outside_references(file: &File, format: ImageFormat) -> io::Result<Result<(), Refusal>> {
    match format {
        ImageFormat::Qcow2 => qcow2(file),
        ImageFormat::Vmdk => vmdk(file),
        ImageFormat::Vpc => vpc(file),
        ImageFormat::Raw | ImageFormat::Vhdx | ImageFormat::Vdi => Ok(Ok(())),
    }
}

/// A name read from a header, for messages: lossy, at most 1023 bytes (qemu's own limit).
fn name(bytes: &[u8]) -> String {
    let bytes = &bytes[..bytes.len().min(1023)];
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn qcow2(file: &File) -> io::Result<Result<(), Refusal>> {
    let head = read_at(file, 0, 104)?;
    let version = be32(&head, 4);
    if !(2..=3).contains(&version) {
        return Ok(Err(Refusal::Unsupported(format!(
            "it is a qcow image of version {version}: only qcow2 (versions 2 and 3) is imported"
        ))));
    }
    let (backing_offset, backing_len) = (be64(&head, 8), be32(&head, 16));
    if backing_offset != 0 || backing_len != 0 {
        let raw = read_at(file, backing_offset, backing_len.min(1023) as usize)?;
        return Ok(Err(Refusal::BackingFile(name(&raw))));
    }
    let cluster_bits = be32(&head, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Ok(Err(Refusal::Unsupported(format!(
            "its qcow2 header has an invalid cluster size (2^{cluster_bits})"
        ))));
    }
    let (mut at, incompatible) = if version == 2 {
        (72u64, 0)
    } else {
        (u64::from(be32(&head, 100)), be64(&head, 72))
    };
    // Header extensions: type, length, data padded to 8 bytes, up to the end of the first cluster.
    let cluster = 1u64 << cluster_bits;
    let mut data_file = None;
    while at + 8 <= cluster {
        let ext = read_at(file, at, 8)?;
        let (kind, len) = (be32(&ext, 0), u64::from(be32(&ext, 4)));
        if ext.len() < 8 || kind == 0 {
            break;
        }
        if kind == 0x4441_5441 {
            data_file = Some(name(&read_at(file, at + 8, len.min(1023) as usize)?));
        }
        at += 8 + len.div_ceil(8) * 8;
    }
    if incompatible & (1 << 2) != 0 || data_file.is_some() {
        return Ok(Err(Refusal::DataFile(
            data_file.unwrap_or_else(|| "(not named in the image)".into()),
        )));
    }
    Ok(Ok(()))
}

/// The file names of a VMDK descriptor's extent lines (`RW 2048 FLAT "name" 0`), with their types.
fn extents(descriptor: &str) -> Vec<(String, String)> {
    descriptor
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let access = words.next()?;
            if !["RW", "RDONLY", "NOACCESS"].contains(&access) {
                return None;
            }
            let (_sectors, kind) = (words.next()?, words.next()?);
            let name = line.split('"').nth(1).unwrap_or("").to_owned();
            Some((kind.to_owned(), name))
        })
        .collect()
}

fn parent_hint(descriptor: &str) -> Option<String> {
    let at = descriptor.find("parentFileNameHint")?;
    let rest = &descriptor[at..];
    Some(rest.split('"').nth(1).unwrap_or(rest).to_owned())
}

/// qemu reads at most this much of a VMDK descriptor.
const VMDK_DESCRIPTOR_MAX: usize = 1 << 20;

fn vmdk(file: &File) -> io::Result<Result<(), Refusal>> {
    let head = read_at(file, 0, 512)?;
    if head.starts_with(b"COWD") {
        return Ok(Err(Refusal::Unsupported(
            "it is a VMDK 3 (COWD) image, which nightcast does not import: convert it to qcow2 or raw first"
                .into(),
        )));
    }
    if !head.starts_with(b"KDMV") {
        // A text descriptor: the data is in the files its extents name.
        let text = read_at(file, 0, VMDK_DESCRIPTOR_MAX)?;
        let text = String::from_utf8_lossy(&text);
        let mut names: Vec<String> = extents(&text).into_iter().map(|(_, n)| n).collect();
        if names.is_empty() {
            names.push("none named".into());
        }
        return Ok(Err(Refusal::Extents(names)));
    }
    let capacity = le64(&head, 12);
    let (desc_offset, desc_size) = (le64(&head, 28), le64(&head, 36));
    let mut descriptor = String::new();
    if desc_offset != 0 {
        let len = desc_size
            .saturating_mul(512)
            .min(VMDK_DESCRIPTOR_MAX as u64) as usize;
        let bytes = read_at(file, desc_offset.saturating_mul(512), len)?;
        descriptor.push_str(&String::from_utf8_lossy(&bytes));
    }
    let found = extents(&descriptor);
    if capacity == 0 {
        // qemu opens the embedded descriptor as a descriptor file, extents and all.
        let mut names: Vec<String> = found.into_iter().map(|(_, n)| n).collect();
        if names.is_empty() {
            names.push("none named".into());
        }
        return Ok(Err(Refusal::Extents(names)));
    }
    let foreign: Vec<String> = found
        .iter()
        .filter(|(kind, name)| kind != "SPARSE" || name.contains('/') || found.len() > 1)
        .map(|(_, n)| n.clone())
        .collect();
    if !foreign.is_empty() {
        return Ok(Err(Refusal::Extents(foreign)));
    }
    // qemu looks for the parent in the descriptor area that follows the header, whatever the
    // header says; look there too.
    let after_header = read_at(file, 512, VMDK_DESCRIPTOR_MAX)?;
    let after_header = String::from_utf8_lossy(&after_header);
    if let Some(parent) = parent_hint(&descriptor).or_else(|| parent_hint(&after_header)) {
        return Ok(Err(Refusal::BackingFile(parent)));
    }
    Ok(Ok(()))
}

fn vpc(file: &File) -> io::Result<Result<(), Refusal>> {
    // The footer: a copy at the start of dynamic disks, always at the end (qemu reads the start first).
    let mut footer = read_at(file, 0, 512)?;
    if !footer.starts_with(b"conectix") {
        let len = file.metadata()?.len();
        footer = read_at(file, len.saturating_sub(512), 512)?;
    }
    const DIFFERENCING: u32 = 4;
    if be32(&footer, 60) != DIFFERENCING {
        return Ok(Ok(()));
    }
    // The parent's name: UTF-16BE at offset 64 of the dynamic header.
    let dynamic = read_at(file, be64(&footer, 16), 1024)?;
    let units: Vec<u16> = dynamic
        .get(64..576)
        .unwrap_or(&[])
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    Ok(Err(Refusal::BackingFile(String::from_utf16_lossy(&units))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_is_told_from_a_file_that_is_no_disk() {
        let with = |offset: usize, magic: &[u8]| {
            let mut head = vec![0u8; LAYOUT_HEAD];
            head[offset..offset + magic.len()].copy_from_slice(magic);
            layout_of(&head)
        };
        assert_eq!(
            with(510, &[0x55, 0xaa]),
            Some("an MBR partition table or boot sector")
        );
        assert_eq!(with(512, b"EFI PART"), Some("a GPT partition table"));
        assert_eq!(with(1080, &[0x53, 0xef]), Some("an ext2/3/4 file system"));
        assert_eq!(with(0x10040, b"_BHRfS_M"), Some("a Btrfs file system"));
        assert_eq!(with(0x8001, b"CD001"), Some("an ISO 9660 file system"));
        // A text file, zeros, random bytes, a short file: none.
        assert_eq!(layout_of(b"hello\n"), None);
        assert_eq!(layout_of(&[0u8; LAYOUT_HEAD]), None);
        assert_eq!(layout_of(&crate::testimage::image_bytes(1 << 20, 3)), None);
        assert_eq!(layout_of(&[0x55; 511]), None);
    }

    #[test]
    fn every_format_name_parses_back_and_others_are_refused() {
        for f in ImageFormat::ALL {
            assert_eq!(f.as_str().parse::<ImageFormat>(), Ok(f));
        }
        let e = "qed".parse::<ImageFormat>().unwrap_err();
        assert!(e.contains("qed") && e.contains("vhdx"), "{e}");
    }

    #[test]
    fn descriptor_extents_and_parents_are_found() {
        let d = "# Disk DescriptorFile\nRW 2048 FLAT \"/etc/passwd\" 0\nRDONLY 10 SPARSE \"b.vmdk\"\nparentFileNameHint=\"/srv/key\"\n";
        assert_eq!(
            extents(d),
            vec![
                ("FLAT".into(), "/etc/passwd".into()),
                ("SPARSE".into(), "b.vmdk".into())
            ]
        );
        assert_eq!(parent_hint(d).as_deref(), Some("/srv/key"));
    }
}

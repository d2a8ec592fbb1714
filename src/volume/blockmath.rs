//! Pure block math: splits a byte range of the device into a partial head
//! sector, a run of whole sectors and a partial tail sector. No crypto and
//! no I/O here, so the arithmetic is tested on its own.

/// A piece of one sector covered only in part by a request: it needs a
/// read-modify-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialSector {
    /// Sector number on the device.
    pub sector: u64,
    /// First byte of the piece inside the sector.
    pub in_sector: usize,
    /// Length of the piece (shorter than a sector).
    pub len: usize,
    /// Where the piece starts in the request buffer.
    pub in_buf: usize,
}

/// The split of a byte range `[off, off + len)` into sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectorSpan {
    /// The partial first sector, if the range starts inside a sector.
    pub head: Option<PartialSector>,
    /// First whole sector covered.
    pub first_whole: u64,
    /// Number of whole sectors covered.
    pub whole: u64,
    /// Where the whole sectors start in the request buffer.
    pub whole_in_buf: usize,
    /// The partial last sector, if the range ends inside a sector (and is
    /// not the same sector as `head`).
    pub tail: Option<PartialSector>,
}

/// Splits `[off, off + len)` into head, whole sectors and tail for sectors
/// of `sector_size` bytes (a power of two). `off + len` must not overflow
/// (callers bound ranges by the device size first).
pub fn split(off: u64, len: usize, sector_size: usize) -> SectorSpan {
    let ss = sector_size as u64;
    let end = off + len as u64;
    let mut span = SectorSpan {
        head: None,
        first_whole: off.div_ceil(ss),
        whole: 0,
        whole_in_buf: 0,
        tail: None,
    };
    if len == 0 {
        span.first_whole = off / ss;
        return span;
    }
    let head_in_sector = (off % ss) as usize;
    if head_in_sector != 0 {
        let head_len = (sector_size - head_in_sector).min(len);
        span.head = Some(PartialSector {
            sector: off / ss,
            in_sector: head_in_sector,
            len: head_len,
            in_buf: 0,
        });
        span.whole_in_buf = head_len;
        if head_len == len {
            return span;
        }
    }
    let whole_end = end / ss; // first sector not wholly covered
    span.whole = whole_end.saturating_sub(span.first_whole);
    let tail_len = (end % ss) as usize;
    if tail_len != 0 {
        span.tail = Some(PartialSector {
            sector: whole_end,
            in_sector: 0,
            len: tail_len,
            in_buf: len - tail_len,
        });
    }
    span
}

/// The chunk indices `first..=last` touched by `[off, off + len)` for chunks
/// of `chunk_size` bytes; `None` for an empty range.
pub fn chunk_range(off: u64, len: u64, chunk_size: u64) -> Option<(u64, u64)> {
    if len == 0 {
        return None;
    }
    Some((off / chunk_size, (off + len - 1) / chunk_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: usize = 4096;

    fn covered(span: &SectorSpan) -> usize {
        span.head.map_or(0, |h| h.len) + span.whole as usize * S + span.tail.map_or(0, |t| t.len)
    }

    #[test]
    fn aligned_range_is_all_whole() {
        let s = split(2 * S as u64, 3 * S, S);
        assert_eq!(s.head, None);
        assert_eq!(s.tail, None);
        assert_eq!((s.first_whole, s.whole, s.whole_in_buf), (2, 3, 0));
    }

    #[test]
    fn inside_one_sector_is_head_only() {
        let s = split(S as u64 + 10, 100, S);
        assert_eq!(
            s.head,
            Some(PartialSector {
                sector: 1,
                in_sector: 10,
                len: 100,
                in_buf: 0
            })
        );
        assert_eq!((s.whole, s.tail), (0, None));
    }

    #[test]
    fn head_whole_tail() {
        let s = split(100, 2 * S + 50, S);
        let head = s.head.unwrap();
        assert_eq!((head.sector, head.in_sector, head.len), (0, 100, S - 100));
        assert_eq!((s.first_whole, s.whole, s.whole_in_buf), (1, 1, S - 100));
        let tail = s.tail.unwrap();
        assert_eq!((tail.sector, tail.in_sector, tail.len), (2, 0, 150));
        assert_eq!(tail.in_buf, 2 * S + 50 - 150);
        assert_eq!(covered(&s), 2 * S + 50);
    }

    #[test]
    fn head_then_tail_without_whole() {
        let s = split(S as u64 - 1, 2, S);
        assert_eq!(s.head.unwrap().len, 1);
        assert_eq!(s.whole, 0);
        let tail = s.tail.unwrap();
        assert_eq!((tail.sector, tail.len, tail.in_buf), (1, 1, 1));
    }

    #[test]
    fn ends_on_boundary_after_head() {
        let s = split(10, S - 10, S);
        assert_eq!(s.head.unwrap().len, S - 10);
        assert_eq!((s.whole, s.tail), (0, None));
    }

    #[test]
    fn empty_range() {
        let s = split(5000, 0, S);
        assert_eq!((s.head, s.whole, s.tail), (None, 0, None));
    }

    #[test]
    fn exhaustive_small_sectors_cover_exactly() {
        // Sector size 8: every (off, len) in a small window covers each byte once.
        for off in 0..40u64 {
            for len in 0..40usize {
                let s = split(off, len, 8);
                let mut seen = [0u8; 200];
                if let Some(h) = s.head {
                    for i in 0..h.len {
                        assert_eq!(
                            h.sector * 8 + (h.in_sector + i) as u64,
                            off + (h.in_buf + i) as u64
                        );
                        seen[h.in_buf + i] += 1;
                    }
                }
                for i in 0..(s.whole as usize * 8) {
                    assert_eq!(
                        s.first_whole * 8 + i as u64,
                        off + (s.whole_in_buf + i) as u64
                    );
                    seen[s.whole_in_buf + i] += 1;
                }
                if let Some(t) = s.tail {
                    assert_eq!(t.in_sector, 0);
                    for i in 0..t.len {
                        assert_eq!(t.sector * 8 + i as u64, off + (t.in_buf + i) as u64);
                        seen[t.in_buf + i] += 1;
                    }
                }
                assert!(seen[..len].iter().all(|&c| c == 1), "off {off} len {len}");
                assert!(seen[len..].iter().all(|&c| c == 0));
            }
        }
    }

    #[test]
    fn chunk_ranges() {
        let c = 512 * 1024;
        assert_eq!(chunk_range(0, 0, c), None);
        assert_eq!(chunk_range(0, 1, c), Some((0, 0)));
        assert_eq!(chunk_range(c - 1, 2, c), Some((0, 1)));
        assert_eq!(chunk_range(c, c, c), Some((1, 1)));
    }
}

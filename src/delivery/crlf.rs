//! CRLF to LF, in a stream of chunks.

/// Converts CRLF to LF in a stream of chunks, keeping every other byte (a lone CR stays).
/// A CR at the end of one chunk is held back until the next chunk shows what follows it.
#[derive(Debug, Default)]
pub struct CrlfToLf {
    pending_cr: bool,
}

impl CrlfToLf {
    /// Converts `data`, handing the output to `out` in as few pieces as possible.
    pub fn convert(
        &mut self,
        mut data: &[u8],
        out: &mut impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if std::mem::take(&mut self.pending_cr) && data[0] != b'\n' {
            out(b"\r")?;
        }
        loop {
            match memchr::memchr(b'\r', data) {
                None => return if data.is_empty() { Ok(()) } else { out(data) },
                Some(i) => {
                    if i > 0 {
                        out(&data[..i])?;
                    }
                    match data.get(i + 1) {
                        None => {
                            self.pending_cr = true;
                            return Ok(());
                        }
                        Some(b'\n') => data = &data[i + 1..],
                        Some(_) => {
                            out(b"\r")?;
                            data = &data[i + 1..];
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: a CR held back is written.
    pub fn finish(
        &mut self,
        out: &mut impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        if std::mem::take(&mut self.pending_cr) {
            out(b"\r")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert_chunked(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut c = CrlfToLf::default();
        let mut out = Vec::new();
        let mut sink = |d: &[u8]| {
            out.extend_from_slice(d);
            Ok(())
        };
        for piece in input.chunks(chunk) {
            c.convert(piece, &mut sink).unwrap();
        }
        c.finish(&mut sink).unwrap();
        out
    }

    #[test]
    fn crlf_becomes_lf_in_every_chunk_size_and_lone_crs_stay() {
        let input = b"a\r\nb\rc\r\r\n\r\n\n\rend\r";
        for chunk in 1..=input.len() {
            assert_eq!(
                convert_chunked(input, chunk),
                b"a\nb\rc\r\n\n\n\rend\r",
                "chunk {chunk}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn chunking_never_changes_the_result(input in proptest::collection::vec(proptest::prop_oneof![proptest::prelude::Just(b'\r'), proptest::prelude::Just(b'\n'), proptest::prelude::any::<u8>()], 0..200), chunk in 1usize..20) {
            let whole = convert_chunked(&input, input.len().max(1));
            proptest::prop_assert_eq!(convert_chunked(&input, chunk), whole);
        }
    }
}

//! Joining the frames of a batch into one run, and cutting the run's outputs back into one
//! `Outputs` per request, in order.

use crate::codec::{Column, Frame};
use crate::model::{OutputData, OutputTensor, Outputs};

/// Copies the frames' rows, in order, into one frame. The originals are kept so that each
/// request can still be run alone if the combined run fails. Frames decoded against one
/// signature have the same columns; frames that do not are refused rather than misaligned.
pub fn concat(frames: &[Frame]) -> Result<Frame, String> {
    let rows = frames.iter().map(|f| f.rows).sum();
    let Some(first) = frames.first() else {
        return Ok(Frame {
            rows: 0,
            columns: Vec::new(),
        });
    };
    let mut columns: Vec<Column> = first
        .columns
        .iter()
        .map(|c| empty_like(c, rows * (c.len() / first.rows.max(1))))
        .collect();
    for frame in frames {
        if frame.columns.len() != columns.len() {
            return Err("frames of one batch have different inputs".into());
        }
        for (dst, src) in columns.iter_mut().zip(&frame.columns) {
            extend(dst, src)?;
        }
    }
    Ok(Frame { rows, columns })
}

fn empty_like(col: &Column, n: usize) -> Column {
    match col {
        Column::F32(_) => Column::F32(Vec::with_capacity(n)),
        Column::F64(_) => Column::F64(Vec::with_capacity(n)),
        Column::I64(_) => Column::I64(Vec::with_capacity(n)),
        Column::I32(_) => Column::I32(Vec::with_capacity(n)),
        Column::Bool(_) => Column::Bool(Vec::with_capacity(n)),
        Column::Str(_) => Column::Str(Vec::with_capacity(n)),
    }
}

fn extend(dst: &mut Column, src: &Column) -> Result<(), String> {
    match (dst, src) {
        (Column::F32(d), Column::F32(s)) => d.extend_from_slice(s),
        (Column::F64(d), Column::F64(s)) => d.extend_from_slice(s),
        (Column::I64(d), Column::I64(s)) => d.extend_from_slice(s),
        (Column::I32(d), Column::I32(s)) => d.extend_from_slice(s),
        (Column::Bool(d), Column::Bool(s)) => d.extend_from_slice(s),
        (Column::Str(d), Column::Str(s)) => d.extend_from_slice(s),
        _ => return Err("frames of one batch have different input types".into()),
    }
    Ok(())
}

/// Rows `start..end` of `frame`, padded to `pad_to` rows by repeating the last of them: a
/// fixed-batch model then runs on values it accepts, and the padded rows' outputs are dropped.
pub fn take_rows(frame: &Frame, start: usize, end: usize, pad_to: usize) -> Frame {
    let rows = end - start;
    let columns = frame
        .columns
        .iter()
        .map(|col| {
            let width = col.len() / frame.rows.max(1);
            let (from, to) = (start * width, end * width);
            let last = to.saturating_sub(width);
            let pad = pad_to.saturating_sub(rows);
            macro_rules! cut {
                ($v:expr, $variant:ident) => {{
                    let mut out = Vec::with_capacity(pad_to.max(rows) * width);
                    out.extend_from_slice(&$v[from..to]);
                    for _ in 0..pad {
                        out.extend_from_slice(&$v[last..to]);
                    }
                    Column::$variant(out)
                }};
            }
            match col {
                Column::F32(v) => cut!(v, F32),
                Column::F64(v) => cut!(v, F64),
                Column::I64(v) => cut!(v, I64),
                Column::I32(v) => cut!(v, I32),
                Column::Bool(v) => cut!(v, Bool),
                Column::Str(v) => cut!(v, Str),
            }
        })
        .collect();
    Frame {
        rows: rows.max(pad_to),
        columns,
    }
}

/// The outputs of consecutive runs as the outputs of one run over all their rows. Every part
/// must follow its rows and have the same outputs.
pub fn join(parts: Vec<Outputs>) -> Result<Outputs, String> {
    let mut parts = parts.into_iter();
    let Some(mut all) = parts.next() else {
        return Ok(Outputs {
            rows: 0,
            tensors: Vec::new(),
        });
    };
    if !follows_rows(&all) {
        return Err("the outputs of a run do not have one row per input row".into());
    }
    for part in parts {
        if part.tensors.len() != all.tensors.len() || !follows_rows(&part) {
            return Err("the outputs of a run do not have one row per input row".into());
        }
        all.rows += part.rows;
        for (dst, src) in all.tensors.iter_mut().zip(part.tensors) {
            if dst.shape.get(1..) != src.shape.get(1..) {
                return Err(format!(
                    "output \"{}\" changes shape between runs",
                    dst.name
                ));
            }
            append(&mut dst.data, src.data)?;
            if let Some(first) = dst.shape.first_mut() {
                *first += src.shape.first().copied().unwrap_or(0);
            }
        }
    }
    Ok(all)
}

fn append(dst: &mut OutputData, src: OutputData) -> Result<(), String> {
    match (dst, src) {
        (OutputData::F32(d), OutputData::F32(mut s)) => d.append(&mut s),
        (OutputData::F64(d), OutputData::F64(mut s)) => d.append(&mut s),
        (OutputData::I64(d), OutputData::I64(mut s)) => d.append(&mut s),
        (OutputData::I32(d), OutputData::I32(mut s)) => d.append(&mut s),
        (OutputData::Bool(d), OutputData::Bool(mut s)) => d.append(&mut s),
        (OutputData::Str(d), OutputData::Str(mut s)) => d.append(&mut s),
        (OutputData::MapI64(d), OutputData::MapI64(mut s)) => d.append(&mut s),
        (OutputData::MapStr(d), OutputData::MapStr(mut s)) => d.append(&mut s),
        _ => return Err("an output changes type between runs".into()),
    }
    Ok(())
}

/// True when every output has one entry (or one row of a tensor) per input row, so the
/// outputs of a combined run can be cut back per request.
pub fn follows_rows(outputs: &Outputs) -> bool {
    outputs.tensors.iter().all(|t| match &t.data {
        OutputData::MapI64(_) | OutputData::MapStr(_) => t.data.len() == outputs.rows,
        _ => {
            t.shape.first() == Some(&outputs.rows)
                && t.data.len() == outputs.rows * t.shape[1..].iter().product::<usize>()
        }
    })
}

/// Cuts `outputs` into consecutive pieces of `sizes` rows.
pub fn split(outputs: Outputs, sizes: &[usize]) -> Result<Vec<Outputs>, String> {
    let total: usize = sizes.iter().sum();
    if total != outputs.rows || !follows_rows(&outputs) {
        return Err(format!(
            "the outputs of a {}-row run do not have one row per input row",
            outputs.rows
        ));
    }
    let mut pieces: Vec<Outputs> = sizes
        .iter()
        .map(|&rows| Outputs {
            rows,
            tensors: Vec::with_capacity(outputs.tensors.len()),
        })
        .collect();
    for tensor in outputs.tensors {
        let width = tensor.row_width(total);
        let mut rest = tensor.data;
        // Cut from the back so each piece is split off without copying what precedes it.
        for (piece, &rows) in pieces.iter_mut().zip(sizes).rev() {
            let at = rest.len() - rows * width;
            let tail = split_off(&mut rest, at);
            let mut shape = tensor.shape.clone();
            if let Some(first) = shape.first_mut() {
                *first = rows;
            }
            piece.tensors.push(OutputTensor {
                name: tensor.name.clone(),
                shape,
                data: tail,
            });
        }
    }
    Ok(pieces)
}

fn split_off(data: &mut OutputData, at: usize) -> OutputData {
    match data {
        OutputData::F32(v) => OutputData::F32(v.split_off(at)),
        OutputData::F64(v) => OutputData::F64(v.split_off(at)),
        OutputData::I64(v) => OutputData::I64(v.split_off(at)),
        OutputData::I32(v) => OutputData::I32(v.split_off(at)),
        OutputData::Bool(v) => OutputData::Bool(v.split_off(at)),
        OutputData::Str(v) => OutputData::Str(v.split_off(at)),
        OutputData::MapI64(v) => OutputData::MapI64(v.split_off(at)),
        OutputData::MapStr(v) => OutputData::MapStr(v.split_off(at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(rows: usize, start: f32) -> Frame {
        Frame {
            rows,
            columns: vec![
                Column::F32((0..rows * 2).map(|i| start + i as f32).collect()),
                Column::Str((0..rows).map(|i| format!("s{start}-{i}")).collect()),
            ],
        }
    }

    #[test]
    fn concat_appends_rows_in_order() {
        let f = concat(&[frame(1, 0.0), frame(2, 10.0)]).unwrap();
        assert_eq!(f.rows, 3);
        assert_eq!(
            f.columns[0],
            Column::F32(vec![0.0, 1.0, 10.0, 11.0, 12.0, 13.0])
        );
        assert_eq!(
            f.columns[1],
            Column::Str(vec!["s0-0".into(), "s10-0".into(), "s10-1".into()])
        );
        let mut odd = frame(1, 0.0);
        odd.columns[0] = Column::I64(vec![1, 2]);
        assert!(concat(&[frame(1, 0.0), odd]).is_err());
    }

    fn outputs() -> Outputs {
        Outputs {
            rows: 3,
            tensors: vec![
                OutputTensor {
                    name: "label".into(),
                    shape: vec![3],
                    data: OutputData::I64(vec![0, 1, 0]),
                },
                OutputTensor {
                    name: "probabilities".into(),
                    shape: vec![3, 2],
                    data: OutputData::F32(vec![0.9, 0.1, 0.2, 0.8, 0.7, 0.3]),
                },
                OutputTensor {
                    name: "zipmap".into(),
                    shape: vec![3],
                    data: OutputData::MapI64(vec![vec![(0, 0.9)], vec![(0, 0.2)], vec![(0, 0.7)]]),
                },
            ],
        }
    }

    #[test]
    fn split_gives_each_request_its_own_rows() {
        let parts = split(outputs(), &[1, 2]).unwrap();
        assert_eq!(parts[0].rows, 1);
        assert_eq!(parts[0].tensors[0].data, OutputData::I64(vec![0]));
        assert_eq!(parts[0].tensors[1].shape, vec![1, 2]);
        assert_eq!(parts[0].tensors[1].data, OutputData::F32(vec![0.9, 0.1]));
        assert_eq!(parts[1].tensors[0].data, OutputData::I64(vec![1, 0]));
        assert_eq!(parts[1].tensors[1].shape, vec![2, 2]);
        assert_eq!(
            parts[1].tensors[1].data,
            OutputData::F32(vec![0.2, 0.8, 0.7, 0.3])
        );
        assert_eq!(
            parts[1].tensors[2].data,
            OutputData::MapI64(vec![vec![(0, 0.2)], vec![(0, 0.7)]])
        );
        assert_eq!(parts[1].tensors[2].name, "zipmap");
    }

    #[test]
    fn take_rows_cuts_and_pads_with_the_last_real_row() {
        let f = frame(3, 0.0);
        let piece = take_rows(&f, 2, 3, 2);
        assert_eq!(piece.rows, 2);
        assert_eq!(piece.columns[0], Column::F32(vec![4.0, 5.0, 4.0, 5.0]));
        assert_eq!(
            piece.columns[1],
            Column::Str(vec!["s0-2".into(), "s0-2".into()])
        );
        let whole = take_rows(&f, 0, 3, 1);
        assert_eq!(whole, f);
    }

    #[test]
    fn joined_runs_split_back_like_one_run() {
        let all = outputs();
        let parts = split(all.clone(), &[1, 1, 1]).unwrap();
        let joined = join(parts).unwrap();
        assert_eq!(joined.rows, 3);
        for (j, a) in joined.tensors.iter().zip(&all.tensors) {
            assert_eq!((&j.name, &j.shape, &j.data), (&a.name, &a.shape, &a.data));
        }
        let mut odd = split(all, &[1, 2]).unwrap();
        odd[1].tensors[1].shape = vec![2, 1];
        odd[1].tensors[1].data = OutputData::F32(vec![0.2, 0.7]);
        assert!(join(odd).is_err());
    }

    #[test]
    fn outputs_that_do_not_follow_the_rows_are_not_split() {
        let mut o = outputs();
        o.tensors[1].shape = vec![2, 3];
        assert!(!follows_rows(&o));
        assert!(split(o, &[1, 2]).is_err());
        assert!(split(outputs(), &[1, 1]).is_err());
    }
}

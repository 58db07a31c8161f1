//! The media rules and replicated state, tested through `apply` and `query`.

use std::collections::BTreeSet;

use courier_raft::logic::MemView;

use super::*;
use crate::app::{AppCommand, AppQuery, Refusal, Request, answer_of};

fn refused(r: Refusal) -> MediaError {
    match r {
        Refusal::Media(e) => e,
        other => panic!("{other:?}"),
    }
}
/// A command through the state machine, its answer read back from the bytes.
fn run<C: Request + Into<AppCommand>>(v: &mut MemView, c: C) -> Result<Outcome<C::Answer>> {
    let AppCommand::Media(c) = c.into() else { unreachable!() };
    Ok(answer_of(&apply(v, &c)?).map_err(refused))
}
fn look<Q: Request + Into<AppQuery>>(v: &MemView, q: Q) -> Result<Outcome<Q::Answer>> {
    let AppQuery::Media(q) = q.into() else { unreachable!() };
    Ok(answer_of(&query(v, &q)?).map_err(refused))
}

#[test]
fn stored_bytes_are_charged_once_per_upload_up_to_the_quota() {
    let mut v = MemView::default();
    let charge = |v: &mut MemView, upload: u64, bytes: u64| run(v, cmd::Charge { owner: 7, upload, bytes, quota: 250 }).unwrap();
    assert_eq!(charge(&mut v, 1, 100), Ok(()));
    assert_eq!(charge(&mut v, 1, 100), Ok(()), "a retry");
    assert_eq!(charge(&mut v, 2, 100), Ok(()));
    let before = v.clone();
    assert!(matches!(charge(&mut v, 3, 100), Err(MediaError::QuotaExceeded(_))));
    assert_eq!(v, before, "a refusal writes nothing");
    assert_eq!(charge(&mut v, 3, 50), Ok(()), "up to the quota exactly");
    assert_eq!(run(&mut v, cmd::Charge { owner: 8, upload: 4, bytes: 250, quota: 250 }).unwrap(), Ok(()), "another user's own quota");
    assert_eq!(run(&mut v, cmd::Charge { owner: 7, upload: 5, bytes: 1 << 40, quota: 0 }).unwrap(), Ok(()), "0: no quota");
}

#[test]
fn part_rules_follow_the_brief() {
    assert!(check_part(0, 512 << 10, 512 << 10).is_ok());
    assert!(check_part(3, 1024, 10).is_ok(), "a short last part");
    for bad in [0, 1000, 3 << 10, 1 << 20, 768 << 10] {
        assert!(matches!(check_part(0, bad, 10), Err(MediaError::PartInvalid(_))), "part size {bad}");
    }
    assert!(matches!(check_part(0, 1024, 1025), Err(MediaError::PartInvalid(_))));
    assert!(matches!(check_part(0, 1024, 0), Err(MediaError::PartInvalid(_))));
    assert_eq!(check_part(4000, 1024, 1), Err(MediaError::TooBig));
    assert_eq!(check_shape(MAX_FILE + 1, 4001, 512 << 10), Err(MediaError::TooBig));
    assert_eq!(check_shape(3 << 20, 6, 512 << 10), Ok(3));
    assert!(check_shape(3 << 20, 7, 512 << 10).is_err(), "7 parts cannot make 3 MiB");
}

#[test]
fn chunks_are_whole_parts() {
    assert_eq!(parts_per_chunk(512 << 10), 2);
    assert_eq!(chunk_parts(1, 512 << 10, 5), 2..4);
    assert_eq!(chunk_parts(2, 512 << 10, 5), 4..5);
    assert_eq!(chunk_parts(0, 1024, 3), 0..3);
    let mut recorded = BTreeMap::new();
    recorded.insert(0, ChunkRef { hash: [0; 32], len: 1 << 20 });
    let staged: BTreeSet<u32> = [2].into();
    assert_eq!(missing_parts(&recorded, &staged, 5, 512 << 10), vec![3, 4]);
}

fn add(v: &mut MemView, upload: u64, owner: u64, index: u32, len: u32) -> Outcome<Option<ChunkRef>> {
    run(v, cmd::AddChunk { upload, owner, part_size: 512 << 10, index, chunk: ChunkRef { hash: [index as u8; 32], len }, now_ms: 1 }).unwrap()
}

fn finish(v: &mut MemView, upload: u64, owner: u64, size: u64) -> Outcome<File> {
    run(v, cmd::Finish { upload, owner, file: 7 << 16 | 1, size, sha256: [9; 32], name: "a.bin".into(), mime: "application/octet-stream".into(), thumbs: Vec::new(), now_ms: 2 }).unwrap()
}

#[test]
fn previews_are_part_of_the_file_and_old_records_still_read() {
    let mut v = MemView::default();
    assert!(add(&mut v, 5, 1, 0, 10).is_ok());
    let thumb = Thumb { kind: b's', width: 100, height: 50, chunk: ChunkRef { hash: [7; 32], len: 900 } };
    let cmd = cmd::Finish { upload: 5, owner: 1, file: 3 << 16 | 1, size: 10, sha256: [9; 32], name: "a.png".into(), mime: "image/png".into(), thumbs: vec![thumb], now_ms: 2 };
    let Ok(f) = run(&mut v, cmd).unwrap() else { panic!() };
    assert_eq!(f.chunk_hashes().collect::<Vec<_>>(), vec![[0; 32], [7; 32]], "the preview's chunk is in use too");
    // A record in the format-1 layout (no previews, a list of chats).
    let v1 = (4u64 << 16 | 1, 1u64, 10u64, [9u8; 32], String::from("old.bin"), String::from("x/y"), vec![ChunkRef { hash: [0; 32], len: 10 }], 2u64, vec![77u64]);
    v.put(&file_key(4 << 16 | 1), courier_raft::codec::encode(&v1));
    let Ok(old) = look(&v, ask::File { file: 4 << 16 | 1 }).unwrap() else { panic!() };
    assert_eq!((old.name.as_str(), old.thumbs.len(), old.chunks.len()), ("old.bin", 0, 1));
}

#[test]
fn chunk_references_page_through_uploads_then_files() {
    let mut v = MemView::default();
    for upload in 1..=3u64 {
        assert!(add(&mut v, upload, 1, 0, 10).is_ok());
    }
    let (mut seen, mut after) = (Vec::new(), Vec::new());
    loop {
        let Ok(RefPage { hashes, next }) = look(&v, ask::ChunkRefs { rows: RefRows::Uploads, after: after.clone(), limit: 2 }).unwrap() else { panic!() };
        seen.extend(hashes);
        match next {
            Some(k) => after = k,
            None => break,
        }
    }
    assert_eq!(seen.len(), 3, "every upload's chunk, over two pages");
    let Ok(_) = finish(&mut v, 2, 1, 10) else { panic!() };
    let refs = |rows| match look(&v, ask::ChunkRefs { rows, after: Vec::new(), limit: 100 }).unwrap() {
        Ok(RefPage { hashes, next: None }) => hashes.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!((refs(RefRows::Uploads), refs(RefRows::Files)), (2, 1), "the finished upload's chunk is now the file's");
}

#[test]
fn an_upload_becomes_a_file_once() {
    let mut v = MemView::default();
    let size = (1 << 20) + 10;
    assert!(add(&mut v, 5, 1, 0, 1 << 20).is_ok());
    assert!(matches!(finish(&mut v, 5, 1, size), Err(MediaError::PartInvalid(_))), "chunk 1 is missing");
    assert!(add(&mut v, 5, 1, 1, 10).is_ok());
    assert!(matches!(add(&mut v, 5, 2, 1, 10), Err(MediaError::BadRequest(_))), "another user's upload id");
    let Ok(f) = finish(&mut v, 5, 1, size) else { panic!() };
    assert_eq!((f.size, f.chunks.len()), (size, 2));
    // A short chunk before the last one would misplace every byte after it.
    assert!(add(&mut v, 9, 1, 0, 10).is_ok());
    assert!(add(&mut v, 9, 1, 1, 1 << 20).is_ok());
    assert!(matches!(finish(&mut v, 9, 1, (1 << 20) + 10), Err(MediaError::PartInvalid(_))), "chunk 0 is short");
    // The first chunk recorded for an index stays, and the answer names it.
    assert_eq!(add(&mut v, 9, 1, 0, 77), Ok(Some(ChunkRef { hash: [0; 32], len: 10 })));
    let Ok(again) = finish(&mut v, 5, 1, size) else { panic!() };
    assert_eq!(again, f, "a repeated finish answers the same file");
    assert_eq!(finish(&mut v, 5, 2, size), Err(MediaError::NotFound), "not to another user");
    assert!(matches!(look(&v, ask::File { file: f.id }).unwrap(), Ok(_)));
    assert_eq!(look(&v, ask::Finished { upload: 5 }).unwrap(), Ok(f.clone()));
    assert_eq!(look(&v, ask::Finished { upload: 6 }).unwrap(), Err(MediaError::NotFound));
    assert_eq!(look(&v, ask::File { file: 99 }).unwrap().err(), Some(MediaError::NotFound));
}

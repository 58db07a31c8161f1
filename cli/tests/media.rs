//! Media storage, end to end: real nodes, uploads and downloads through the
//! CLI and the SDK, nodes killed in between.

mod common;

use courier_client::Code;
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};

const EXTRA: &str = "development = true\n[raft]\nheartbeat_ms = 100\nelection_min_ms = 400\nelection_max_ms = 800\n[placement]\ntick_ms = 300\n[auth]\ntest_numbers = true\nlogins_per_address_per_minute = 0\nlogins_per_phone_per_minute = 0\n[limits]\nposts_per_chat_per_minute = 0\nchanges_per_chat_per_minute = 0\ninvites_per_chat_per_minute = 0\ntyping_per_chat_per_minute = 0\nnew_private_chats_per_hour = 0\n";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, &mut out).unwrap();
    out
}

fn must_ok((ok, out, err): (bool, String, String)) -> String {
    assert!(ok, "courier failed: {err}");
    out
}

#[test]
fn a_file_on_five_nodes_survives_two_of_them_killed() {
    // Five replicas of every Raft group (sessions, file records) survive two
    // nodes lost, as the chunks' three homes do.
    let mut c = Cluster::start_settled(70, 5, &EXTRA.replace("tick_ms = 300\n", "tick_ms = 300\nreplicas = 5\n"));
    let home = tempfile::tempdir().unwrap();
    let data = random_bytes(200 << 20);
    let src = home.path().join("video.bin");
    std::fs::write(&src, &data).unwrap();
    must_ok(c.user_cli(home.path(), "ann", &["login", "--phone", "+9996610001", "--code", "11111", "--name", "Ann"]));
    let out = must_ok(c.user_cli(home.path(), "ann", &["upload", src.to_str().unwrap(), "--json"]));
    let file: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(file["size"], 200 << 20);
    assert_eq!(file["sha256"], hex::encode(Sha256::digest(&data)));
    let id = file["id"].as_u64().unwrap().to_string();

    // Any two nodes: the chunks' third homes and the records' third replicas remain.
    let mut nodes: Vec<u32> = (1..=5).collect();
    let seed = std::process::id() as usize;
    let (a, b) = (nodes.remove(seed % 5), nodes.remove(seed / 5 % 4));
    c.kill9(a);
    c.kill9(b);
    eprintln!("killed n{a} and n{b}");
    let survivor = nodes[0];
    let dst = home.path().join("copy.bin");
    must_ok(c.user_cli_on(&[survivor], home.path(), "ann", &["download", &id, dst.to_str().unwrap()]));
    let copy = std::fs::read(&dst).unwrap();
    assert!(copy == data, "the download differs from the upload ({} vs {} bytes)", copy.len(), data.len());
}

#[test]
fn uploads_follow_the_part_rules_and_resume_on_another_node() {
    let mut c = Cluster::start_settled(71, 3, EXTRA);
    rt().block_on(async {
        let (a1, _, _) = device(&c, 1, "+9996610001", "Ann").await;
        let (a2, _, _) = device(&c, 2, "+9996610001", "Ann").await;
        let (eve, _, _) = device(&c, 3, "+9996620002", "Eve").await;
        let code = |r: courier_client::Result<()>| r.err().map(|e| e.code());

        // The brief's part rules.
        assert_eq!(code(a1.upload_part(1, 0, 1000, vec![0; 10]).await), Some(Code::FilePartInvalid), "not a multiple of 1 KiB");
        assert_eq!(code(a1.upload_part(1, 0, 3 << 10, vec![0; 10]).await), Some(Code::FilePartInvalid), "does not divide 512 KiB");
        assert_eq!(code(a1.upload_part(1, 0, 1 << 20, vec![0; 10]).await), Some(Code::FilePartInvalid), "over 512 KiB");
        assert_eq!(code(a1.upload_part(1, 0, 1024, vec![0; 1025]).await), Some(Code::FilePartInvalid), "longer than its part size");
        let too_big = a1.finish_upload(1, 4097, 512 << 10, (2 << 30) + 1, [0; 32], "big", "").await.unwrap_err();
        assert_eq!(too_big.code(), Code::FileTooBig);

        // 5 MiB in 10 parts of 512 KiB = chunks {0,1} {2,3} {4,5} {6,7} {8,9}.
        let part = 512 << 10;
        let data = random_bytes(5 << 20);
        let sha: [u8; 32] = Sha256::digest(&data).into();
        let upload = 77;
        for p in 0..7u32 {
            a1.upload_part(upload, p, part as u32, data[p as usize * part..(p as usize + 1) * part].to_vec()).await.unwrap();
        }
        // Node 1 dies holding part 6 (its chunk is not complete): chunks 0-2 are stored.
        c.kill9(1);
        let missing = a2.finish_upload(upload, 10, part as u32, data.len() as u64, sha, "clip.bin", "").await.unwrap_err();
        match &missing {
            courier_client::Error::Api { code, parts, .. } => {
                assert_eq!(*code, Code::FilePartMissing);
                assert_eq!(parts, &vec![6, 7, 8, 9], "exactly the parts of chunks not stored");
            }
            other => panic!("expected FILE_PART_MISSING, got {other}"),
        }
        for p in [6u32, 7, 8, 9] {
            a2.upload_part(upload, p, part as u32, data[p as usize * part..(p as usize + 1) * part].to_vec()).await.unwrap();
        }
        let f = a2.finish_upload(upload, 10, part as u32, data.len() as u64, sha, "clip.bin", "").await.unwrap();
        assert_eq!((f.size, f.name.as_str()), (data.len() as u64, "clip.bin"));
        let again = a2.finish_upload(upload, 10, part as u32, data.len() as u64, sha, "clip.bin", "").await.unwrap();
        assert_eq!(again.id, f.id, "a repeated finish answers the same file");

        // Download by range through node 2, across a chunk boundary.
        let slice = a2.get_file(f.id, (1 << 20) - 100, 300).await.unwrap();
        assert_eq!(slice.bytes, data[(1 << 20) - 100..(1 << 20) + 200]);
        let mut got = Vec::new();
        while (got.len() as u64) < f.size {
            got.extend(a2.get_file(f.id, got.len() as u64, part as u32).await.unwrap().bytes);
        }
        assert!(got == data, "the whole file, slice by slice");

        // Another user learns nothing about it.
        assert_eq!(eve.get_file(f.id, 0, 10).await.unwrap_err().code(), Code::FileNotFound);
        assert_eq!(eve.get_file(f.id ^ (1 << 40), 0, 10).await.unwrap_err().code(), Code::FileNotFound);

        // Bytes that are not the declared ones are refused, and forgotten.
        let small = random_bytes(3000);
        a2.upload_part(78, 0, 1024, small[..1024].to_vec()).await.unwrap();
        a2.upload_part(78, 1, 1024, small[1024..2048].to_vec()).await.unwrap();
        a2.upload_part(78, 2, 1024, small[2048..].to_vec()).await.unwrap();
        let wrong = a2.finish_upload(78, 3, 1024, 3000, [7; 32], "x", "").await.unwrap_err();
        assert_eq!(wrong.code(), Code::FileHashMismatch);
        let after = a2.finish_upload(78, 3, 1024, 3000, Sha256::digest(&small).into(), "x", "").await.unwrap_err();
        assert_eq!(after.code(), Code::FilePartMissing, "the upload starts over");
    });
}

/// The cluster's chunk health from `cluster status --json`: (in use, under-replicated, stored copies, repaired).
fn chunk_health(c: &Cluster) -> Option<(u64, u64, u64, u64)> {
    let s = c.status()?;
    let h = &s["chunks"];
    Some((h["chunks"].as_u64()?, h["under_replicated"].as_u64()?, h["stored"].as_u64()?, h["repaired"].as_u64()?))
}

/// The collector every second, for chunks unused for 2 s and uploads unfinished for 4 s.
const EXTRA_GC: &str = "development = true\n[raft]\nheartbeat_ms = 100\nelection_min_ms = 400\nelection_max_ms = 800\n[placement]\ntick_ms = 300\n[auth]\ntest_numbers = true\nlogins_per_address_per_minute = 0\nlogins_per_phone_per_minute = 0\n[limits]\nposts_per_chat_per_minute = 0\nchanges_per_chat_per_minute = 0\ninvites_per_chat_per_minute = 0\ntyping_per_chat_per_minute = 0\nnew_private_chats_per_hour = 0\n[media]\ngc_every_secs = 1\n";

#[test]
fn removing_a_node_repairs_its_chunks_and_a_new_node_takes_about_one_nth() {
    let mut c = Cluster::start_settled(72, 4, EXTRA_GC);
    let home = tempfile::tempdir().unwrap();
    let data = random_bytes(64 << 20);
    let src = home.path().join("archive.bin");
    std::fs::write(&src, &data).unwrap();
    must_ok(c.user_cli(home.path(), "ann", &["login", "--phone", "+9996610001", "--code", "11111", "--name", "Ann"]));
    let out = must_ok(c.user_cli(home.path(), "ann", &["upload", src.to_str().unwrap(), "--json"]));
    let id = serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["id"].as_u64().unwrap().to_string();
    must_wait(Duration::from_secs(30), "64 chunks with 3 copies each", || {
        let (used, under, stored, _) = chunk_health(&c)?;
        (used == 64 && under == 0 && stored == 192).then_some(())
    });

    // Decommission node 2: its copies get new homes among the other three
    // before it is marked removed.
    let (_, _, _, repaired_before) = chunk_health(&c).unwrap();
    let out = c.run(&["cluster", "remove-node", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut saw_repair = false;
    let repaired_at_removal = must_wait(Duration::from_secs(90), "node 2 removed", || {
        let s = c.status()?;
        let (_, under, _, repaired) = chunk_health(&c)?;
        saw_repair |= under > 0 || repaired > repaired_before;
        s["nodes"].as_array()?.iter().any(|n| n["id"] == 2 && n["state"] == "removed").then_some(repaired)
    });
    assert!(saw_repair, "status showed the repair");
    // Removed means its chunks had moved: with it gone at once, the three
    // left hold every chunk 3 times, and no copy is made after.
    c.kill9(2);
    must_wait(Duration::from_secs(30), "the three nodes left report every chunk", || {
        let (used, under, stored, _) = chunk_health(&c)?;
        (used == 64 && under == 0 && stored == 192).then_some(())
    });
    assert_eq!(chunk_health(&c).unwrap().3, repaired_at_removal, "every copy was made before node 2 was marked removed");

    // A fifth node: it becomes a home of about a quarter of the copies; the
    // copies it took are then deleted from the nodes that are no longer
    // their homes (192 copies in all again).
    c.add_node(5, EXTRA_GC);
    let mut last = 0;
    let on_new = must_wait(Duration::from_secs(120), "the new node to take its chunks and the old copies to go", || {
        std::thread::sleep(Duration::from_secs(3));
        let s = c.status()?;
        let nodes = s["nodes"].as_array()?;
        let up = nodes.iter().filter(|n| n["state"] == "up").count();
        let on_new = nodes.iter().find(|n| n["id"] == 5)?["chunks_stored"].as_u64()?;
        let (used, under, stored, _) = chunk_health(&c)?;
        eprintln!("up {up}, chunks in use {used}, under-replicated {under}, stored {stored}, on the new node {on_new}");
        let stable = on_new == last;
        last = on_new;
        (up == 4 && used == 64 && under == 0 && stored == 192 && on_new > 0 && stable).then_some(on_new)
    });
    let moved = on_new as f64 / 192.0;
    eprintln!("adding a 4th active node moved {:.1} % of the chunk copies (1/N = 25 %)", moved * 100.0);
    assert!(moved <= 0.5, "moved {moved:.3}, at most 2/N");
    let s = c.status().unwrap();
    assert_eq!(s["chunks"]["moved_off"].as_u64(), Some(on_new), "one copy deleted elsewhere for each copy the new node took");

    // A fifth active node (node 6): about a fifth of the copies.
    c.add_node(6, EXTRA_GC);
    let mut last = 0;
    let on_sixth = must_wait(Duration::from_secs(120), "node 6 to take its chunks and the old copies to go", || {
        std::thread::sleep(Duration::from_secs(3));
        let s = c.status()?;
        let nodes = s["nodes"].as_array()?;
        let up = nodes.iter().filter(|n| n["state"] == "up").count();
        let on_sixth = nodes.iter().find(|n| n["id"] == 6)?["chunks_stored"].as_u64()?;
        let (used, under, stored, _) = chunk_health(&c)?;
        let stable = on_sixth == last;
        last = on_sixth;
        (up == 5 && used == 64 && under == 0 && stored == 192 && on_sixth > 0 && stable).then_some(on_sixth)
    });
    let moved = on_sixth as f64 / 192.0;
    eprintln!("adding a 5th active node moved {:.1} % of the chunk copies (1/N = 20 %)", moved * 100.0);
    assert!(moved <= 0.4, "moved {moved:.3}, at most 2/N");

    // And the file still reads back whole through the new node.
    let dst = home.path().join("copy.bin");
    must_ok(c.user_cli_on(&[5], home.path(), "ann", &["download", &id, dst.to_str().unwrap()]));
    assert!(std::fs::read(&dst).unwrap() == data);
}

#[test]
fn a_damaged_chunk_is_never_served_and_the_scrub_replaces_it() {
    let mut c = Cluster::start_settled(73, 3, EXTRA);
    let data = random_bytes(3 << 20);
    let sha: [u8; 32] = Sha256::digest(&data).into();
    let file = rt().block_on(async {
        let (a, _, _) = device(&c, 1, "+9996610001", "Ann").await;
        for p in 0..6u32 {
            let part = 512 << 10;
            a.upload_part(5, p, part as u32, data[p as usize * part..(p as usize + 1) * part].to_vec()).await.unwrap();
        }
        a.finish_upload(5, 6, 512 << 10, data.len() as u64, sha, "scan.bin", "").await.unwrap()
    });

    // Flip bytes in every chunk node 3 stores (with 3 nodes it is a home of all).
    let data_dir = c.nodes[&3].data.clone();
    let damage = |c: &mut Cluster| -> Vec<[u8; 32]> {
        c.stop(3);
        let store = courier_storage::Store::open(&data_dir).unwrap();
        let hashes = store.list_chunks().unwrap();
        assert_eq!(hashes.len(), 3, "node 3 holds the file's 3 chunks");
        for h in &hashes {
            let mut b = store.get_chunk(h).unwrap().unwrap();
            b[1000] ^= 0xff;
            b[500_000] ^= 0x01;
            store.put_chunk(h, &b, 1).unwrap();
        }
        drop(store);
        c.start(3);
        must_wait(Duration::from_secs(60), "node 3 back", || c.status_on(&[3]).filter(|s| s["nodes"].as_array().unwrap().iter().all(|n| n["state"] == "up")));
        hashes
    };
    let must_be_good = |hashes: &[[u8; 32]]| {
        let store = courier_storage::Store::open(&data_dir).unwrap();
        for h in hashes {
            let b = store.get_chunk(h).unwrap().unwrap();
            assert_eq!(<[u8; 32]>::from(Sha256::digest(&b)), *h, "the copy on disk is good again");
        }
    };
    let replaced = |c: &Cluster| c.status().and_then(|s| s["chunks"]["corrupt_repaired"].as_u64());

    // The scrub alone (nothing reads the file) finds and replaces them.
    let damaged = damage(&mut c);
    must_wait(Duration::from_secs(60), "the scrub to replace the damaged copies", || (replaced(&c)? >= 3).then_some(()));
    c.stop(3);
    must_be_good(&damaged);
    c.start(3);

    // Damaged again, and read at once through node 3:
    let damaged = damage(&mut c);
    let before = replaced(&c).unwrap();

    // Reading through node 3 never returns the damaged bytes.
    rt().block_on(async {
        let (a, _, _) = device(&c, 3, "+9996610001", "Ann").await;
        let mut got = Vec::new();
        while (got.len() as u64) < file.size {
            got.extend(a.get_file(file.id, got.len() as u64, 512 << 10).await.unwrap().bytes);
        }
        assert!(got == data, "the download through the node with damaged copies is the original");
    });
    must_wait(Duration::from_secs(60), "the damaged copies replaced", || (replaced(&c)? >= before + 3).then_some(()));
    c.stop(3);
    must_be_good(&damaged);
}

#[test]
fn a_node_down_past_the_grace_period_loses_its_chunks_to_new_homes() {
    let extra = EXTRA.replace("tick_ms = 300\n", "tick_ms = 300\ndead_after_secs = 3\n");
    let mut c = Cluster::start_settled(74, 4, &extra);
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("notes.bin");
    std::fs::write(&src, random_bytes(16 << 20)).unwrap();
    must_ok(c.user_cli(home.path(), "ann", &["login", "--phone", "+9996610001", "--code", "11111", "--name", "Ann"]));
    must_ok(c.user_cli(home.path(), "ann", &["upload", src.to_str().unwrap()]));
    must_wait(Duration::from_secs(30), "16 chunks with 3 copies each", || {
        let (used, under, stored, _) = chunk_health(&c)?;
        (used == 16 && under == 0 && stored == 48).then_some(())
    });
    // Node 4 dies and stays dead: after 3 s its chunks get new homes among
    // the three left, which then hold every chunk 3 times (48 copies).
    c.kill9(4);
    must_wait(Duration::from_secs(90), "the three nodes left to hold 3 copies of every chunk", || {
        let (used, under, stored, _) = chunk_health(&c)?;
        (used == 16 && under == 0 && stored == 48).then_some(())
    });
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn files_posted_in_a_chat_reach_its_members_only() {
    let c = Cluster::start_settled(75, 3, EXTRA);
    let home = tempfile::tempdir().unwrap();
    let path = |name: &str| home.path().join(name).to_str().unwrap().to_string();
    rt().block_on(async {
        let (ann, _, _) = device(&c, 1, "+9996610001", "Ann").await;
        let (bob, mut bob_events, bob_user) = device(&c, 2, "+9996620002", "Bob").await;
        let (eve, _, eve_user) = device(&c, 3, "+9996630003", "Eve").await;
        let group = ann.create_group("Pets", vec![bob_user.id]).await.unwrap();
        let chat = group.id.to_string();

        // Ann sends a picture from the command line (another device of hers).
        let picture = png(1200, 800);
        std::fs::write(path("cat.png"), &picture).unwrap();
        must_ok(c.user_cli(home.path(), "ann", &["login", "--phone", "+9996610001", "--code", "11111"]));
        let out = must_ok(c.user_cli(home.path(), "ann", &["send", &chat, "our cat", "--file", &path("cat.png"), "--json"]));
        let sent: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(sent["media"]["kind"], "photo", "an image goes as a photo: {sent}");
        let file = &sent["media"]["file"];
        let thumbs: Vec<(String, u64, u64)> = file["thumbs"].as_array().unwrap().iter().map(|t| (t["kind"].as_str().unwrap().into(), t["width"].as_u64().unwrap(), t["height"].as_u64().unwrap())).collect();
        assert_eq!(thumbs, vec![("s".into(), 100, 67), ("m".into(), 320, 213)], "a small and a medium preview, shaped like the picture");
        let (file_id, msg_id) = (file["id"].as_u64().unwrap(), sent["id"].as_u64().unwrap());

        // Bob sees it arrive live, with the file in it.
        let live = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(courier_client::Event::Update(courier_client::pb::Update { kind: Some(courier_client::pb::update::Kind::ChatEvent(e)) })) = bob_events.recv().await
                    && let Some(courier_client::pb::chat_event::Kind::NewMessage(m)) = e.kind
                    && m.media.is_some()
                {
                    return m;
                }
            }
        })
        .await
        .expect("Bob's device gets the photo live");
        assert_eq!(courier_client::FileLocation::of_message(&live), Some(courier_client::FileLocation { file_id, chat_id: group.id, message_id: msg_id, thumb: None }));

        // Bob downloads it through the message (from the CLI, on node 2), and its previews.
        must_ok(c.user_cli_on(&[2], home.path(), "bob", &["login", "--phone", "+9996620002", "--code", "22222"]));
        let (fid, mid) = (file_id.to_string(), msg_id.to_string());
        let history = must_ok(c.user_cli_on(&[2], home.path(), "bob", &["history", &chat]));
        assert!(history.contains(&format!("courier download {fid} OUT --chat {chat} --message {mid}")), "history says how to download it:\n{history}");
        must_ok(c.user_cli_on(&[2], home.path(), "bob", &["download", &fid, &path("bob.png"), "--chat", &chat, "--message", &mid]));
        assert!(std::fs::read(path("bob.png")).unwrap() == picture, "Bob's copy is the picture");
        for (kind, w, h) in [("s", 100, 67), ("m", 320, 213)] {
            let out = path(&format!("thumb-{kind}.jpg"));
            must_ok(c.user_cli_on(&[2], home.path(), "bob", &["download", &fid, &out, "--chat", &chat, "--message", &mid, "--thumb", kind]));
            let img = image::load_from_memory_with_format(&std::fs::read(&out).unwrap(), image::ImageFormat::Jpeg).unwrap();
            assert_eq!((img.width(), img.height()), (w, h), "preview {kind}");
        }
        // Without naming the message, the file is not Bob's to read.
        let (ok, _, err) = c.user_cli_on(&[2], home.path(), "bob", &["download", &fid, &path("x.png")]);
        assert!(!ok && err.contains("FILE_NOT_FOUND"), "{err}");

        // Eve is no member: neither the message nor a message of hers that does not carry the file opens it.
        let at = courier_client::FileLocation { file_id, chat_id: group.id, message_id: msg_id, thumb: None };
        assert_eq!(eve.get_file(at, 0, 10).await.unwrap_err().code(), Code::NotAMember);
        assert_eq!(eve.get_file(at.thumb('s'), 0, 10).await.unwrap_err().code(), Code::NotAMember);
        let dm = bob.private_chat(eve_user.id).await.unwrap();
        let hello = eve.send_message(dm.id, 1, "hi Bob", 0).await.unwrap();
        let wrong = courier_client::FileLocation { file_id, chat_id: dm.id, message_id: hello.id, thumb: None };
        assert_eq!(eve.get_file(wrong, 0, 10).await.unwrap_err().code(), Code::FileNotFound);
        assert_eq!(eve.get_file(file_id, 0, 10).await.unwrap_err().code(), Code::FileNotFound);

        // Bob forwards it to Eve: she reads it through her copy.
        let fwd = bob.forward_messages(dm.id, group.id, vec![msg_id], 9).await.unwrap();
        let hers = courier_client::FileLocation::of_message(&fwd).expect("the forward carries the file");
        assert_eq!(hers.file_id, file_id);
        let mut got = Vec::new();
        while got.len() < picture.len() {
            got.extend(eve.get_file(hers, got.len() as u64, 512 << 10).await.unwrap().bytes);
        }
        assert!(got == picture, "Eve's download through the forward");

        // Bob leaves the group: the group's message no longer opens it for him.
        bob.remove_member(group.id, bob_user.id).await.unwrap();
        assert_eq!(bob.get_file(at, 0, 10).await.unwrap_err().code(), Code::NotAMember);

        // Not an image: a document (no previews); "photo" is refused; a voice note keeps its length.
        std::fs::write(path("notes.bin"), random_bytes(3 << 20)).unwrap();
        let (ok, _, err) = c.user_cli(home.path(), "ann", &["send", &chat, "--file", &path("notes.bin"), "--as", "photo"]);
        assert!(!ok && err.contains("BAD_REQUEST"), "{err}");
        let out = must_ok(c.user_cli(home.path(), "ann", &["send", &chat, "--file", &path("notes.bin"), "--json"]));
        let doc: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!((doc["media"]["kind"].as_str(), doc["media"]["file"]["thumbs"].as_array().map(Vec::len)), (Some("document"), Some(0)));
        assert_eq!(doc["text"], "", "no caption");
        let out = must_ok(c.user_cli(home.path(), "ann", &["send", &chat, "hear this", "--file", &path("notes.bin"), "--as", "voice", "--duration", "7", "--json"]));
        let voice: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!((voice["media"]["kind"].as_str(), voice["media"]["duration_secs"].as_u64()), (Some("voice"), Some(7)));
        let long = "x".repeat(1025);
        let (ok, _, err) = c.user_cli(home.path(), "ann", &["send", &chat, &long, "--file", &path("notes.bin")]);
        assert!(!ok && err.contains("MEDIA_CAPTION_TOO_LONG"), "{err}");
        // Bob cannot post Ann's file (his own uploads only; forwarding is how files travel).
        let media = courier_client::pb::InputMedia { file_id, kind: courier_client::pb::MediaKind::MediaPhoto.into(), duration_secs: 0 };
        assert_eq!(bob.send_media(dm.id, 10, "", media, 0).await.unwrap_err().code(), Code::FileNotFound);
    });
}

#[test]
fn unfinished_uploads_expire_and_chunks_nothing_uses_are_collected() {
    let extra = format!("{EXTRA_GC}gc_after_secs = 2\nupload_ttl_secs = 4\n");
    let c = Cluster::start_settled(76, 3, &extra);
    rt().block_on(async {
        let (a, _, _) = device(&c, 1, "+9996610001", "Ann").await;
        let part = 512 << 10;
        // A finished 2 MiB file, and 3 MiB of an upload never finished.
        let kept = random_bytes(2 << 20);
        for p in 0..4u32 {
            a.upload_part(1, p, part as u32, kept[p as usize * part..(p as usize + 1) * part].to_vec()).await.unwrap();
        }
        let f = a.finish_upload(1, 4, part as u32, kept.len() as u64, Sha256::digest(&kept).into(), "kept.bin", "").await.unwrap();
        let dropped = random_bytes(3 << 20);
        for p in 0..6u32 {
            a.upload_part(2, p, part as u32, dropped[p as usize * part..(p as usize + 1) * part].to_vec()).await.unwrap();
        }
        // 2 + 3 chunks on each of the 3 nodes; then the upload expires and its 3 chunks go.
        let mut saw_all = false;
        must_wait(Duration::from_secs(60), "the unfinished upload's chunks collected", || {
            let (used, under, stored, _) = chunk_health(&c)?;
            saw_all |= stored == 15;
            (saw_all && used == 2 && under == 0 && stored == 6).then_some(())
        });
        let s = c.status().unwrap();
        assert_eq!(s["chunks"]["collected"].as_u64(), Some(9), "3 chunks on 3 nodes");
        assert!(s["chunks"]["uploads_expired"].as_u64() >= Some(1));
        let missing = a.finish_upload(2, 6, part as u32, dropped.len() as u64, Sha256::digest(&dropped).into(), "x", "").await.unwrap_err();
        assert_eq!(missing.code(), Code::FilePartMissing, "the expired upload starts over");
        // The finished file is whole.
        let mut got = Vec::new();
        while got.len() < kept.len() {
            got.extend(a.get_file(f.id, got.len() as u64, part as u32).await.unwrap().bytes);
        }
        assert!(got == kept);
    });
}

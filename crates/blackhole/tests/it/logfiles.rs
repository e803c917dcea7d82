//! Log files: every line lands, in order, rotated at line boundaries.

use std::time::{Duration, Instant};

use blackhole_api::State;

use crate::harness::{Stack, testsvc, wait_for};

#[test]
fn every_line_of_a_100k_line_burst_reaches_the_file() {
    let mut s = Stack::new();
    s.write_config(&format!(
        "[orchestrator]\nlog_service_output = false\n[services.burst]\nbinary_path = \"{}\"\nargs = [\"print\", \"--lines\", \"100000\", \"--size\", \"60\"]\n[services.burst.restart]\npolicy = \"never\"\n",
        testsvc().display()
    ));
    let t0 = Instant::now();
    s.up();
    s.wait_state("burst", State::Exited);
    let lines = wait_for("100,000 lines in the file", Duration::from_secs(30), || {
        let l = s.log_lines("burst");
        (l.len() >= 100_000).then_some(l)
    });
    let took = t0.elapsed();
    assert_eq!(lines.len(), 100_000);
    for (i, l) in lines.iter().enumerate() {
        assert!(l.starts_with(&format!("line {i} ")), "line {i} is {l:?}");
        assert_eq!(l.len(), 60);
    }
    eprintln!(
        "100,000 lines logged in {} ms (including start-up)",
        took.as_millis()
    );
}

#[test]
fn files_rotate_at_the_configured_size_without_cutting_lines() {
    let mut s = Stack::new();
    s.write_config(&format!(
        "[services.rot]\nbinary_path = \"{}\"\nargs = [\"print\", \"--lines\", \"5000\", \"--size\", \"80\"]\nlog_max_size = \"64KiB\"\nlog_max_files = 3\n[services.rot.restart]\npolicy = \"never\"\n",
        testsvc().display()
    ));
    s.up();
    s.wait_state("rot", State::Exited);
    let dir = s.path().join(".blackhole/logs");
    wait_for("the last line", Duration::from_secs(10), || {
        std::fs::read_to_string(dir.join("rot.log"))
            .ok()?
            .contains("line 4999 ")
            .then_some(())
    });
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("rot.log"))
        .collect();
    files.sort();
    assert_eq!(files, ["rot.log", "rot.log.1", "rot.log.2"]);
    let mut numbers = Vec::new();
    for f in ["rot.log.2", "rot.log.1", "rot.log"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(text.len() <= 64 * 1024, "{f} is {} bytes", text.len());
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            let body = line.splitn(4, ' ').nth(3).unwrap_or("");
            if let Some(rest) = body.strip_prefix("line ") {
                numbers.push(rest.split(' ').next().unwrap().parse::<u32>().unwrap());
            }
        }
    }
    // The kept files hold a contiguous, unbroken run ending at the last line.
    assert_eq!(*numbers.last().unwrap(), 4999);
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "a line was lost or cut at rotation"
    );
}

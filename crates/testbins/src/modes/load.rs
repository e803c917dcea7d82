//! Resource hogs for limit enforcement and accounting: memory and CPU.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::args::Cli;
use crate::{die, sig};

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

pub fn hog(cli: &Cli) -> ! {
    let mib: usize = cli.num("mib", 64);
    let step: usize = cli.num::<usize>("step", 16).max(1);
    let hold = cli.ms("hold-ms", 0);
    let mut held = Vec::new();
    let mut done = 0;
    while done < mib {
        let n = step.min(mib - done);
        // Fresh allocations are lazily mapped: only touching a page makes it count.
        let mut chunk = vec![0u8; n * MIB];
        for i in (0..chunk.len()).step_by(PAGE) {
            chunk[i] = 1;
        }
        held.push(black_box(chunk));
        done += n;
        say!("allocated {done} MiB");
        if done < mib {
            sig::sleep(cli, hold);
        }
    }
    sig::run_until_term(cli)
}

static STOP: AtomicBool = AtomicBool::new(false);

pub fn burn(cli: &Cli) -> ! {
    let threads: usize = cli.num("threads", 1);
    for _ in 0..threads {
        let spin = || {
            let mut x = 0u64;
            while !STOP.load(Ordering::Relaxed) {
                x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        };
        if let Err(e) = std::thread::Builder::new().stack_size(64 << 10).spawn(spin) {
            die(format_args!("spawn: {e}"));
        }
    }
    sig::wait_term(None);
    STOP.store(true, Ordering::Relaxed);
    sig::on_term(cli)
}

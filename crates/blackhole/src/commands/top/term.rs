//! The terminal in dashboard mode (raw, alternate screen, hidden cursor)
//! and the way back on every exit: drop, error or panic.

use std::io::{Stdout, stdout};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use crossterm::cursor::{Hide, Show};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// Whether the terminal is in dashboard mode; whoever restores first
/// (drop or panic hook) clears it, so the other does nothing.
static ACTIVE: AtomicBool = AtomicBool::new(false);

pub type Term = Terminal<CrosstermBackend<Stdout>>;

pub struct Screen {
    pub terminal: Term,
    _restore: Restore,
}

/// Restores on drop, including when `enter` fails half-way.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        restore();
    }
}

impl Screen {
    pub fn enter() -> std::io::Result<Screen> {
        install_panic_hook();
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let restore = Restore;
        execute!(stdout(), EnterAlternateScreen, Hide)?;
        let terminal = Terminal::new(CrosstermBackend::new(stdout()))?;
        Ok(Screen {
            terminal,
            _restore: restore,
        })
    }
}

/// False once something restored the terminal behind the loop's back (a
/// panic in a task): the loop must stop drawing.
pub fn is_active() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

/// Leaves dashboard mode; every step is tried even if one fails (the
/// terminal may be gone).
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(stdout(), LeaveAlternateScreen, Show);
    }
}

/// The message of a panic must land on a usable terminal, not in raw mode
/// on the alternate screen that is about to vanish.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

//! Sandboxed user functions: a WebAssembly module shipped in the model folder (a `wasm` step),
//! run by wasmtime on each batch, with a fuel limit (instructions, so a loop that never ends
//! stops), a wall-clock limit (fuel counts instructions, not time, so an epoch ticker also
//! interrupts a call past its deadline: 2 s on a worker, 20 ms on an HTTP thread, which then
//! hands the request to a worker), a memory limit, and no imports at all (no files, no
//! network, no clock).
//!
//! The ABI, in core WebAssembly:
//!
//! ```text
//! (memory (export "memory") 1)
//! (func (export "alloc") (param $bytes i32) (result i32))      ;; a buffer for the batch
//! (func (export "transform") (param $ptr i32) (param $rows i32) (param $cols i32) (result i32))
//! ```
//!
//! The batch is `rows × cols` little-endian f64 at `ptr`, row-major, the step's features in
//! the order it lists them (NaN: a missing value). `transform` rewrites it in place and
//! returns 0, or another code to fail the batch. A batch larger than half the memory limit is
//! passed in pieces of rows. Each worker has its own instance, reused from batch to batch and
//! made anew after a failure.

use std::cell::Cell;
use std::fmt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{
    Config, Engine, Instance, Memory, Module, Store, StoreLimits, StoreLimitsBuilder, Trap,
    TypedFunc,
};

/// A 32-bit module's memory cannot pass 4 GiB.
pub const MAX_MEMORY_MB: u64 = 4096;
pub const MAX_FUEL_PER_ROW: u64 = 1_000_000_000;
/// How often the epoch ticks: the resolution of the time limit.
const TICK: Duration = Duration::from_millis(10);
/// The wall-clock limit of one call.
const TIME_LIMIT: Duration = Duration::from_secs(2);
/// The limit of a call on an HTTP thread, whose other connections wait while it runs: one
/// that overruns it is run again on a worker with `TIME_LIMIT` (`engine::pool`).
const INLINE_LIMIT: Duration = Duration::from_millis(20);
/// The start of the error of a call that overran `INLINE_LIMIT`.
pub const OVERRAN_INLINE: &str = "the function overran the time an HTTP thread gives it";

thread_local! {
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// While it lives, functions called on this thread have `INLINE_LIMIT`.
pub struct Inline(());

impl Inline {
    pub fn enter() -> Inline {
        INLINE.with(|i| i.set(true));
        Inline(())
    }
}

impl Drop for Inline {
    fn drop(&mut self) {
        INLINE.with(|i| i.set(false));
    }
}

/// A compiled function and its limits.
pub struct Function {
    module: Module,
    fuel_base: u64,
    fuel_per_row: u64,
    memory_bytes: usize,
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Function")
            .field("fuel_per_row", &self.fuel_per_row)
            .field("memory_bytes", &self.memory_bytes)
            .finish_non_exhaustive()
    }
}

/// A worker's instance of a function.
pub struct Running {
    store: Store<StoreLimits>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    transform: TypedFunc<(i32, i32, i32), i32>,
}

/// Fuel for instantiation and the calls' own overhead, beside the rows' share.
const FUEL_BASE: u64 = 10_000_000;

/// The one engine of the process, and the thread that ticks its epoch.
fn engine() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config.consume_fuel(true);
            config.epoch_interruption(true);
            let engine = Engine::new(&config).map_err(|e| format!("cannot start wasmtime: {e}"))?;
            let ticking = engine.clone();
            std::thread::Builder::new()
                .name("mlapp-wasm-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(TICK);
                    ticking.increment_epoch();
                })
                .map_err(|e| format!("cannot start wasmtime's epoch thread: {e}"))?;
            Ok(engine)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The deadline of a call, in epoch ticks from now.
fn deadline() -> u64 {
    let limit = if INLINE.with(Cell::get) {
        INLINE_LIMIT
    } else {
        TIME_LIMIT
    };
    (limit.as_millis() / TICK.as_millis()) as u64
}

impl Function {
    /// Compiles the module at `path` (binary or text) and checks that it can be started and
    /// has the ABI's exports.
    pub fn load(path: &Path, fuel_per_row: u64, memory_mb: u64) -> Result<Function, String> {
        let module = Module::from_file(engine()?, path).map_err(|e| format!("{e:#}"))?;
        if let Some(i) = module.imports().next() {
            return Err(format!(
                "it imports {}::{}; a function gets no imports (no files, no network, no clock)",
                i.module(),
                i.name()
            ));
        }
        let f = Function {
            module,
            fuel_base: FUEL_BASE,
            fuel_per_row,
            memory_bytes: usize::try_from(memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
        };
        f.start()?;
        Ok(f)
    }

    /// A new instance, in a store of its own with the limits.
    pub fn start(&self) -> Result<Running, String> {
        let engine = engine()?;
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.memory_bytes)
            .instances(1)
            .memories(1)
            .tables(1)
            .table_elements(100_000)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(engine, limits);
        store.limiter(|l| l);
        store.set_fuel(self.fuel_base).map_err(|e| e.to_string())?;
        store.set_epoch_deadline(deadline());
        let instance = Instance::new(&mut store, &self.module, &[])
            .map_err(|e| format!("it does not start: {}", self.failure(&e)))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or("it exports no \"memory\"")?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "alloc")
            .map_err(|e| format!("its export \"alloc\" must be (i32) -> i32: {e}"))?;
        let transform = instance
            .get_typed_func::<(i32, i32, i32), i32>(&mut store, "transform")
            .map_err(|e| format!("its export \"transform\" must be (i32, i32, i32) -> i32: {e}"))?;
        Ok(Running {
            store,
            memory,
            alloc,
            transform,
        })
    }

    /// `data` (`rows × cols`, row-major) through the function, in place: in pieces of rows
    /// that fit in half its memory, so a large request is not refused for its size.
    pub fn call(
        &self,
        running: &mut Running,
        data: &mut [f64],
        rows: usize,
        cols: usize,
    ) -> Result<(), String> {
        if cols == 0 || rows == 0 {
            return Ok(());
        }
        let per_call = (self.memory_bytes / 2 / (cols * 8)).max(1);
        for piece in data.chunks_mut(per_call * cols) {
            self.call_once(running, piece, piece.len() / cols, cols)?;
        }
        Ok(())
    }

    fn call_once(
        &self,
        running: &mut Running,
        data: &mut [f64],
        rows: usize,
        cols: usize,
    ) -> Result<(), String> {
        let fuel = self
            .fuel_base
            .saturating_add(self.fuel_per_row.saturating_mul(rows as u64));
        running.store.set_fuel(fuel).map_err(|e| e.to_string())?;
        running.store.set_epoch_deadline(deadline());
        let bytes = data.len() * 8;
        let (Ok(len), Ok(r), Ok(c)) = (
            i32::try_from(bytes),
            i32::try_from(rows),
            i32::try_from(cols),
        ) else {
            return Err(format!(
                "a batch of {bytes} bytes is too large for a 32-bit function"
            ));
        };
        let ptr = running
            .alloc
            .call(&mut running.store, len)
            .map_err(|e| self.failure(&e))?;
        let mut buf = Vec::with_capacity(bytes);
        for x in data.iter() {
            buf.extend_from_slice(&x.to_le_bytes());
        }
        let at = ptr as u32 as usize;
        running
            .memory
            .write(&mut running.store, at, &buf)
            .map_err(|_| format!("alloc({len}) gave {ptr}, which is outside its memory"))?;
        let code = running
            .transform
            .call(&mut running.store, (ptr, r, c))
            .map_err(|e| self.failure(&e))?;
        if code != 0 {
            return Err(format!("the function returned the error code {code}"));
        }
        running
            .memory
            .read(&running.store, at, &mut buf)
            .map_err(|_| "the batch's buffer is no longer inside its memory".to_string())?;
        for (x, b) in data.iter_mut().zip(buf.chunks_exact(8)) {
            let mut le = [0u8; 8];
            le.copy_from_slice(b);
            *x = f64::from_le_bytes(le);
        }
        Ok(())
    }

    fn failure(&self, e: &wasmtime::Error) -> String {
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => format!(
                "the function ran out of fuel (it ran too long: {} instructions for the batch \
                 and {} per row at most)",
                self.fuel_base, self.fuel_per_row
            ),
            Some(Trap::Interrupt) if INLINE.with(Cell::get) => format!(
                "{OVERRAN_INLINE} ({} ms); it is run again on a worker",
                INLINE_LIMIT.as_millis()
            ),
            Some(Trap::Interrupt) => format!(
                "the function ran past its time limit of {} ms",
                TIME_LIMIT.as_millis()
            ),
            Some(trap) => format!("the function trapped: {trap}"),
            None => {
                let text = format!("{e:#}");
                if text.contains("memory") && text.contains("grow") {
                    format!(
                        "the function asked for more than its {} MiB of memory",
                        self.memory_bytes >> 20
                    )
                } else {
                    text
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    #[test]
    fn the_example_function_clamps_in_place_and_keeps_missing_values() {
        let f = Function::load(
            &fixture("examples/gender/models/logreg_wasm/functions/clamp.wat"),
            1000,
            1,
        )
        .unwrap();
        let mut running = f.start().unwrap();
        let mut data = vec![-1.0, 0.5, 7.0, f64::NAN, 3.0, 2.999];
        f.call(&mut running, &mut data, 3, 2).unwrap();
        assert_eq!(data[..3], [0.0, 0.5, 3.0]);
        assert!(data[3].is_nan());
        assert_eq!(data[4..], [3.0, 2.999]);
        // The instance is reused, and a batch larger than its first memory grows it.
        let mut big = vec![5.0; 20_000];
        f.call(&mut running, &mut big, 10_000, 2).unwrap();
        assert!(big.iter().all(|&x| x == 3.0));
    }

    #[test]
    fn limits_stop_the_function_and_say_which() {
        let f = Function::load(&fixture("tests/fixtures/wasm/hostile.wat"), 1000, 4).unwrap();
        for (first, want) in [
            (-1.0, "ran out of fuel"),
            (-2.0, "more than its 4 MiB of memory"),
            (-3.0, "trapped"),
            (-4.0, "error code 7"),
            // wasmtime charges fuel for the bytes a memory.fill writes.
            (-5.0, "ran out of fuel"),
        ] {
            let mut running = f.start().unwrap();
            let err = f.call(&mut running, &mut [first, 1.0], 1, 2).unwrap_err();
            assert!(err.contains(want), "{first}: {err}");
        }
        // With all the fuel there is, the wall clock stops a loop that never ends.
        let f = Function::load(
            &fixture("tests/fixtures/wasm/hostile.wat"),
            MAX_FUEL_PER_ROW,
            4,
        )
        .unwrap();
        let mut running = f.start().unwrap();
        let t = std::time::Instant::now();
        let mut batch = [-1.0; 100];
        let err = f.call(&mut running, &mut batch, 100, 1).unwrap_err();
        assert!(err.contains("ran past its time limit of 2000 ms"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
        let err = Function::load(&fixture("tests/fixtures/wasm/imports.wat"), 1000, 2).unwrap_err();
        assert!(
            err.contains("imports wasi_snapshot_preview1::fd_write"),
            "{err}"
        );
    }
}

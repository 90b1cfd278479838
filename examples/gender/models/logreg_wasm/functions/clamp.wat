;; A self-made function for mlapp (a `wasm` step): clamps every value it is given to [0, 3]
;; (hours of use per day, where a few devices report a background app as used all day).
;; A missing value (NaN) stays missing: f64.max and f64.min give NaN for NaN.
;;
;; The ABI (see src/pipeline/wasm.rs): `alloc` gives a buffer for the batch, `transform`
;; rewrites its rows x cols f64 values in place and returns 0.
(module
  (memory (export "memory") 1)

  ;; One buffer at offset 0, the memory grown to fit it: a batch is all this module holds.
  (func (export "alloc") (param $bytes i32) (result i32)
    (local $pages i32)
    (local.set $pages
      (i32.shr_u (i32.add (local.get $bytes) (i32.const 65535)) (i32.const 16)))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then (drop (memory.grow (i32.sub (local.get $pages) (memory.size))))))
    (i32.const 0))

  (func (export "transform") (param $ptr i32) (param $rows i32) (param $cols i32) (result i32)
    (local $p i32)
    (local $end i32)
    (local.set $p (local.get $ptr))
    (local.set $end
      (i32.add (local.get $ptr)
        (i32.shl (i32.mul (local.get $rows) (local.get $cols)) (i32.const 3))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (f64.store (local.get $p)
          (f64.min (f64.max (f64.load (local.get $p)) (f64.const 0)) (f64.const 3)))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $next)))
    (i32.const 0)))

;; square: x -> x * x, for a decimal integer x.
;; A calm function in WebAssembly text: `calm fn register NAME FILE.wat` takes it as it is.
;; The same function in Rust, with the guest SDK, is in executor/guest/examples.
(module
  (import "calm" "arg_len" (func $arg_len (param i32) (result i32)))
  (import "calm" "arg_read" (func $arg_read (param i32 i32) (result i32)))
  (import "calm" "set_result" (func $set_result (param i32 i32)))
  (import "calm" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 512) "the argument is not an integer")
  (global $ok (mut i32) (i32.const 0))

  ;; The decimal integer in memory[0..len), and $ok = 1 if it is one.
  (func $parse (param $len i32) (result i64)
    (local $i i32) (local $neg i32) (local $acc i64) (local $c i32)
    (global.set $ok (i32.const 0))
    (if (i32.eq (i32.load8_u (i32.const 0)) (i32.const 45))
      (then (local.set $neg (i32.const 1)) (local.set $i (i32.const 1))))
    (if (i32.ge_u (local.get $i) (local.get $len)) (then (return (i64.const 0))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $c (i32.sub (i32.load8_u (local.get $i)) (i32.const 48)))
        (if (i32.gt_u (local.get $c) (i32.const 9)) (then (return (i64.const 0))))
        (local.set $acc
          (i64.add (i64.mul (local.get $acc) (i64.const 10)) (i64.extend_i32_u (local.get $c))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (global.set $ok (i32.const 1))
    (if (result i64) (local.get $neg)
      (then (i64.sub (i64.const 0) (local.get $acc)))
      (else (local.get $acc))))

  ;; Sets the call's result to $v in decimal (written backwards from offset 1024).
  (func $emit (param $v i64)
    (local $p i32) (local $u i64)
    (local.set $p (i32.const 1024))
    (local.set $u (local.get $v))
    (if (i64.lt_s (local.get $v) (i64.const 0))
      (then (local.set $u (i64.sub (i64.const 0) (local.get $v)))))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $u) (i64.const 10)))))
      (local.set $u (i64.div_u (local.get $u) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $u) (i64.const 0))))
    (if (i64.lt_s (local.get $v) (i64.const 0))
      (then
        (local.set $p (i32.sub (local.get $p) (i32.const 1)))
        (i32.store8 (local.get $p) (i32.const 45))))
    (call $set_result (local.get $p) (i32.sub (i32.const 1024) (local.get $p))))

  ;; Reads argument 0 as a decimal integer; returns 1 (after logging why) if it is not.
  (func $arg (result i64)
    (local $len i32) (local $x i64)
    (local.set $len (call $arg_len (i32.const 0)))
    (if (i32.or (i32.le_s (local.get $len) (i32.const 0)) (i32.gt_s (local.get $len) (i32.const 20)))
      (then (global.set $ok (i32.const 0)) (return (i64.const 0))))
    (drop (call $arg_read (i32.const 0) (i32.const 0)))
    (call $parse (local.get $len)))

  (func (export "run") (result i32)
    (local $x i64)
    (local.set $x (call $arg))
    (if (i32.eqz (global.get $ok))
      (then (call $log (i32.const 512) (i32.const 30)) (return (i32.const 1))))
    (call $emit (i64.mul (local.get $x) (local.get $x)))
    (i32.const 0)))

;; sum: the sum of every argument read as an array of little-endian 64-bit integers (pass
;; arrays by reference: `calm dag call NAME ref:KEY1 ref:KEY2`), in decimal.
;; A calm function in WebAssembly text: `calm fn register NAME FILE.wat` takes it as it is.
(module
  (import "calm" "arg_count" (func $arg_count (result i32)))
  (import "calm" "arg_len" (func $arg_len (param i32) (result i32)))
  (import "calm" "arg_read" (func $arg_read (param i32 i32) (result i32)))
  (import "calm" "set_result" (func $set_result (param i32 i32)))
  (memory (export "memory") 1)

  (func (export "run") (result i32)
    (local $i i32) (local $len i32) (local $p i32) (local $end i32) (local $acc i64)
    (local $need i32) (local $u i64)
    (block $args_done
      (loop $each_arg
        (br_if $args_done (i32.ge_u (local.get $i) (call $arg_count)))
        (local.set $len (call $arg_len (local.get $i)))
        ;; Grow the memory to hold the argument at offset 1024.
        (local.set $need
          (i32.sub
            (i32.shr_u (i32.add (i32.add (local.get $len) (i32.const 1024)) (i32.const 65535)) (i32.const 16))
            (memory.size)))
        (if (i32.gt_s (local.get $need) (i32.const 0))
          (then (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then (return (i32.const 2))))))
        (drop (call $arg_read (local.get $i) (i32.const 1024)))
        (local.set $p (i32.const 1024))
        (local.set $end (i32.add (i32.const 1024) (i32.and (local.get $len) (i32.const -8))))
        (block $words_done
          (loop $each_word
            (br_if $words_done (i32.ge_u (local.get $p) (local.get $end)))
            (local.set $acc (i64.add (local.get $acc) (i64.load (local.get $p))))
            (local.set $p (i32.add (local.get $p) (i32.const 8)))
            (br $each_word)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each_arg)))
    ;; The sum in decimal, written backwards from offset 1024.
    (local.set $p (i32.const 1024))
    (local.set $u (local.get $acc))
    (if (i64.lt_s (local.get $acc) (i64.const 0))
      (then (local.set $u (i64.sub (i64.const 0) (local.get $acc)))))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $u) (i64.const 10)))))
      (local.set $u (i64.div_u (local.get $u) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $u) (i64.const 0))))
    (if (i64.lt_s (local.get $acc) (i64.const 0))
      (then
        (local.set $p (i32.sub (local.get $p) (i32.const 1)))
        (i32.store8 (local.get $p) (i32.const 45))))
    (call $set_result (local.get $p) (i32.sub (i32.const 1024) (local.get $p)))
    (i32.const 0)))

"""fuzz_test: one libFuzzer target and its corpus-replay test.

fuzz_test(name = "foo", srcs = ["foo_fuzzer.cc"], deps = [...]) defines
  * cc_binary  foo_fuzzer      -- under --config=fuzz (clang, --define=fuzz=1)
                                  linked with libFuzzer (-fsanitize=fuzzer);
                                  otherwise with replay_main.cc, so it builds
                                  with gcc too;
  * cc_test    foo_replay_test -- replay_main over corpus/foo and
                                  regressions/foo: every seed and every input
                                  that ever broke the target runs in the
                                  normal `bazel test //...` (gcc, no sanitizer).
Both link the same LLVMFuzzerTestOneInput.
"""

def fuzz_test(name, srcs, deps = [], size = "small", tags = []):
    native.cc_binary(
        name = name + "_fuzzer",
        testonly = True,
        tags = tags,
        srcs = srcs,
        deps = deps + ["//fuzz:fuzz_input"] + select({
            "//fuzz:libfuzzer": [],
            "//conditions:default": ["//fuzz:replay_main"],
        }),
        linkopts = select({
            "//fuzz:libfuzzer": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
    )
    native.cc_test(
        name = name + "_replay_test",
        size = size,
        tags = tags,
        srcs = srcs,
        deps = deps + ["//fuzz:fuzz_input", "//fuzz:replay_main"],
        data = native.glob(["corpus/" + name + "/**", "regressions/" + name + "/**"]),
        args = ["fuzz/corpus/" + name, "fuzz/regressions/" + name],
    )

"""debian_absl: Abseil built from source, for the ThreadSanitizer build only.

Why: Debian's libabsl is not built with -fsanitize=thread, so TSan cannot see
absl::Mutex's happens-before edges and reports every field guarded by one as
a race. `--config=tsan` (.bazelrc) sets --define=absl=source, which makes
//third_party:absl link this repository's Abseil, compiled with the rest of
the build, instead of the system libraries. Everything else keeps linking
Debian's libabsl.

What: the Debian *source* package of the installed libabsl-dev, at exactly
its version, so headers, Debian's patches and options.h (inline namespace
`debian3`, ABSL_OPTION_HARDENED) match /usr/include/absl and the ABI that
Debian's libgrpc was built against. That matters because gRPC's shared
libraries still load the system libabsl_*.so: the executable's instrumented
copy comes first in the dynamic linker's lookup order, so gRPC's calls into
absl (its gpr_mu is an absl::Mutex) bind to the instrumented code too.

How: `apt-get source --download-only` into a cache shared by all output
bases (~/.cache/iommu-broker/debian-src, so a fresh output base does not
download again), then `dpkg-source -x` into this repository. apt verifies the
files against the signed Sources index. scripts/setup.sh adds the deb-src
entries apt needs for that and installs dpkg-dev.
"""

def _run(rctx, args, what, cwd = None):
    res = rctx.execute(args, working_directory = cwd or "", timeout = 600, quiet = True)
    if res.return_code != 0:
        fail("debian_absl: %s failed (%s):\n%s%s" % (what, " ".join(args), res.stdout, res.stderr))
    return res.stdout.strip()

def _debian_absl_impl(rctx):
    spec = _run(rctx, ["dpkg-query", "-W", "-f=${source:Package} ${source:Version}", "libabsl-dev"],
                "finding the installed libabsl-dev (run scripts/setup.sh)")
    package, version = spec.split(" ")
    upstream_version = version.split(":")[-1]  # .dsc names carry no epoch
    dsc = "%s_%s.dsc" % (package, upstream_version)

    cache = rctx.os.environ.get("XDG_CACHE_HOME") or (rctx.os.environ.get("HOME", "/root") + "/.cache")
    cache = cache + "/iommu-broker/debian-src"
    _run(rctx, ["mkdir", "-p", cache], "creating " + cache)
    if not rctx.path(cache + "/" + dsc).exists:
        _run(
            rctx,
            ["apt-get", "source", "--download-only", "-qq", "%s=%s" % (package, version)],
            "downloading the %s %s source package; scripts/setup.sh adds the deb-src entries and runs apt-get update" % (package, version),
            cwd = cache,
        )

    # dpkg-source checks the files against the .dsc's checksums and applies
    # Debian's patches (the .dsc's signature cannot be checked without
    # debian-keyring; apt already verified the files against the signed
    # Sources index). It wants a directory that does not exist yet, so unpack
    # beside the repository root and move the tree up.
    _run(rctx, ["dpkg-source", "-x", cache + "/" + dsc, "unpacked"],
         "unpacking %s (dpkg-source is in dpkg-dev: run scripts/setup.sh; on a checksum error delete %s)" % (dsc, cache))
    _run(rctx, ["sh", "-c", "find unpacked -mindepth 1 -maxdepth 1 -exec mv -t . {} + && rmdir unpacked"],
         "moving the Abseil tree into the repository")

debian_absl = repository_rule(
    implementation = _debian_absl_impl,
    # Fetched once per output base. After an upgrade of libabsl-dev, re-fetch
    # with `bazel --output_base=... sync --only=com_google_absl`.
    environ = ["HOME", "XDG_CACHE_HOME"],
)

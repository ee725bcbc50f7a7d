"""Stand-in for @bazel_skylib//lib:selects.bzl: config_setting_group only.

Abseil 20220623's absl/BUILD.bazel loads it for one match_any group (wasm).
Bazel 4.2.3 runs offline here, so instead of the real skylib this keeps the
same semantics for match_any: a chain of aliases, unambiguous even when
several settings match. match_all is refused: nothing here uses it.
"""

def _config_setting_group(name, match_any = [], match_all = [], visibility = None):
    if match_all:
        fail("config_setting_group(%s): match_all is not implemented by this stand-in" % name)
    if not match_any:
        fail("config_setting_group(%s): match_any must name at least one setting" % name)
    # name -> select({s0: s0, default: name_1}) -> ... -> last setting.
    for i, setting in enumerate(match_any):
        this = name if i == 0 else "%s_or_%d" % (name, i)
        if i == len(match_any) - 1:
            native.alias(name = this, actual = setting, visibility = visibility)
        else:
            native.alias(
                name = this,
                actual = select({
                    setting: setting,
                    "//conditions:default": ":%s_or_%d" % (name, i + 1),
                }),
                visibility = visibility,
            )

selects = struct(config_setting_group = _config_setting_group)

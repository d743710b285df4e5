rockspec_format = "3.0"
package = "vmlua"
version = "scm-1"
source = {
  url = "git+https://example.invalid/vmlua.git",
}
description = {
  summary = "Define, boot and drive virtual machines with Lua programs",
  detailed = [[
A VM definition is a Lua program: size it from the host, add devices on a
condition, and script what happens after boot. QEMU backend over QMP.]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4",
}
external_dependencies = {
  LIBUV = { header = "uv.h", library = "uv" },
  JANSSON = { header = "jansson.h", library = "jansson" },
  LIBEDIT = { header = "editline/readline.h", library = "edit" },
}
build = {
  type = "builtin",
  modules = {
    ["vmlua.core"] = {
      sources = {
        "src/core.c", "src/loop.c", "src/handle.c", "src/host.c", "src/fs.c", "src/json.c",
        "src/timer.c", "src/process.c", "src/stream.c", "src/signal.c", "src/caller.c",
        "src/terminal.c", "src/editline.c", "src/interrupt.c", "src/lock.c", "src/guard.c",
      },
      defines = { "_GNU_SOURCE" },
      libraries = { "uv", "jansson", "edit" },
      incdirs = { "$(LIBUV_INCDIR)", "$(JANSSON_INCDIR)", "$(LIBEDIT_INCDIR)" },
      libdirs = { "$(LIBUV_LIBDIR)", "$(JANSSON_LIBDIR)", "$(LIBEDIT_LIBDIR)" },
    },
    ["vmlua"] = "lua/vmlua/init.lua",
    ["vmlua.accel"] = "lua/vmlua/accel.lua",
    ["vmlua.attach"] = "lua/vmlua/attach.lua",
    ["vmlua.cli"] = "lua/vmlua/cli.lua",
    ["vmlua.config"] = "lua/vmlua/config.lua",
    ["vmlua.console"] = "lua/vmlua/console.lua",
    ["vmlua.errors"] = "lua/vmlua/errors.lua",
    ["vmlua.fields"] = "lua/vmlua/fields.lua",
    ["vmlua.host"] = "lua/vmlua/host.lua",
    ["vmlua.machine"] = "lua/vmlua/machine.lua",
    ["vmlua.shell"] = "lua/vmlua/shell.lua",
    ["vmlua.plan"] = "lua/vmlua/plan.lua",
    ["vmlua.qemu"] = "lua/vmlua/qemu.lua",
    ["vmlua.qmp"] = "lua/vmlua/qmp.lua",
    ["vmlua.repl"] = "lua/vmlua/repl.lua",
    ["vmlua.runtime"] = "lua/vmlua/runtime.lua",
    ["vmlua.size"] = "lua/vmlua/size.lua",
    ["vmlua.task"] = "lua/vmlua/task.lua",
    ["vmlua.validate"] = "lua/vmlua/validate.lua",
  },
}

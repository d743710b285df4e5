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
  "luafilesystem >= 1.8",
}
external_dependencies = {
  LIBUV = { header = "uv.h", library = "uv" },
  JANSSON = { header = "jansson.h", library = "jansson" },
  LIBEDIT = { header = "editline/readline.h", library = "edit" },
  -- no header: Debian keeps curl/curl.h in a multiarch directory luarocks does not search
  LIBCURL = { library = "curl" },
  LIBCRYPTO = { header = "openssl/evp.h", library = "crypto" },
}
-- The Makefile builds and installs, as `make install` does: the executable
-- (bin/vmlua), the Lua modules and the core module. Objects go into the
-- rock's own directory, never the checkout, and are removed after the
-- install. On Debian (whose luarocks runs under Lua 5.1):
--   luarocks --lua-version 5.4 make vmlua-scm-1.rockspec
-- and, with luafilesystem from Debian's lua-filesystem, add --deps-mode=none.
build = {
  type = "make",
  build_target = "compile",
  build_variables = {
    BUILD = "$(PREFIX)/build",
    CFLAGS = "$(CFLAGS)",
  },
  install_target = "install clean-build",
  install_variables = {
    BUILD = "$(PREFIX)/build",
    PREFIX = "$(PREFIX)",
    BINDIR = "$(BINDIR)",
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
  },
}

# vmlua: make, make test, make demo, make install PREFIX=...
PREFIX ?= /usr/local
# where make install puts things (luarocks passes its own BINDIR, LUADIR, LIBDIR)
BINDIR ?= $(PREFIX)/bin
LUADIR ?= $(PREFIX)/share/lua/5.4
LIBDIR ?= $(PREFIX)/lib/lua/5.4
MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
CC ?= cc
PKGS := lua5.4 libuv jansson libedit
CFLAGS ?= -O2 -g
# libcurl, libcrypto and libvirt: their headers only; src/download.c,
# src/sha256.c and src/libvirt.c open the libraries at first use
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC $(shell pkg-config --cflags $(PKGS) libcurl libcrypto libvirt libvirt-qemu) $(CFLAGS)
LDLIBS := $(shell pkg-config --libs $(PKGS))
MODLIBS := $(shell pkg-config --libs libuv jansson libedit)

VIRT := libvirt libvirt_conn libvirt_domain libvirt_events libvirt_stream libvirt_storage
CORE := core loop handle host fs json timer process stream signal caller terminal editline interrupt lock guard memlimit download sha256 $(VIRT)
BUILD ?= build
CORE_OBJ := $(CORE:%=$(BUILD)/obj/%.o)
BIN := $(BUILD)/bin/vmlua
MODULE := $(BUILD)/lib/lua/5.4/vmlua/core.so
LUA_LINK := $(BUILD)/share/lua/5.4/vmlua
BUSTED := lua5.4 /usr/bin/busted
SANITIZE := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

all: $(BIN) $(MODULE) $(LUA_LINK)

# The executable and the core module only: what luarocks builds (out of the
# checkout, with BUILD in the rock's own directory).
compile: $(BIN) $(MODULE)

$(BUILD)/obj/%.o: src/%.c src/core.h | $(BUILD)/obj
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(VIRT:%=$(BUILD)/obj/%.o): src/libvirt.h

$(BIN): $(BUILD)/obj/main.o $(CORE_OBJ)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(MODULE): $(CORE_OBJ)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -shared -o $@ $^ $(MODLIBS)

$(LUA_LINK):
	@mkdir -p $(@D)
	ln -sfn ../../../../lua/vmlua $@

$(BUILD)/obj:
	mkdir -p $@

deps:
	scripts/install-deps.sh

guests:
	scripts/build-guests.sh
	scripts/build-efi.sh

# The Debian guest of the ssh specs (debootstrap, root, about 2 minutes once)
debian-guest:
	scripts/build-debian.sh

test: deps all guests debian-guest
	$(MAKE) check

# The specs, a file per busted, in parallel (scripts/run-specs.sh; SPECS=
# names some files). Instances made by the specs live in the build tree.
check: all lint doc
	BUILD=$(BUILD) BUSTED="$(BUSTED)" scripts/run-specs.sh $(SPECS)

# The executable built with ASan and UBSan, run over the specs that drive it
# (the bad-definition corpus, the CLI, the prompt, signals, the name lock
# and the guard, around real guests).
sanitize:
	$(MAKE) BUILD=build-asan CFLAGS="$(SANITIZE)" LDFLAGS="-fsanitize=address,undefined" \
	  build-asan/bin/vmlua build-asan/share/lua/5.4/vmlua
	BUILD=build-asan BUSTED="$(BUSTED)" VMLUA_BIN=build-asan/bin/vmlua ASAN_OPTIONS=detect_leaks=1:exitcode=99 LSAN_OPTIONS=exitcode=99 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  scripts/run-specs.sh tests/bad_corpus_spec.lua tests/unit/cli_spec.lua tests/integration/cli_spec.lua tests/repl_spec.lua \
	  tests/integration/signals_spec.lua tests/integration/claim_spec.lua tests/integration/data_spec.lua \
	  tests/integration/instances_spec.lua tests/unit/image_spec.lua

lint:
	luacheck -q lua tests bench examples

demo: deps all guests
	$(BIN) examples/dev.lua

bench: all guests debian-guest
	bench/run.sh

# The API reference, from the doc comments of lua/vmlua (config.ld).
doc:
	ldoc -q -d $(BUILD)/doc .

install: compile
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LUADIR)/vmlua $(DESTDIR)$(LIBDIR)/vmlua \
	  $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	install -m 755 $(BIN) $(DESTDIR)$(BINDIR)/vmlua
	for f in $$(cd lua && find vmlua -name '*.lua'); do \
	  install -d $(DESTDIR)$(LUADIR)/$$(dirname $$f) && \
	  install -m 644 lua/$$f $(DESTDIR)$(LUADIR)/$$f || exit 1; \
	done
	install -m 755 $(MODULE) $(DESTDIR)$(LIBDIR)/vmlua/core.so
	install -m 644 man/vmlua.1 $(DESTDIR)$(MANDIR)/man1/vmlua.1
	install -m 644 completion/vmlua.bash $(DESTDIR)$(BASHCOMPDIR)/vmlua
	install -m 644 completion/_vmlua $(DESTDIR)$(ZSHCOMPDIR)/_vmlua

# What install put there; vmlua/ under LUADIR and LIBDIR are vmlua's own.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/vmlua $(DESTDIR)$(MANDIR)/man1/vmlua.1 \
	  $(DESTDIR)$(BASHCOMPDIR)/vmlua $(DESTDIR)$(ZSHCOMPDIR)/_vmlua
	rm -rf $(DESTDIR)$(LUADIR)/vmlua $(DESTDIR)$(LIBDIR)/vmlua

clean:
	rm -rf build build-asan

# Only $(BUILD): what luarocks runs after installing, leaving nothing behind.
clean-build:
	rm -rf $(BUILD)

.PHONY: all compile deps guests debian-guest test check sanitize lint demo bench doc install uninstall clean clean-build

# vmlua: make, make test, make demo, make install PREFIX=...
PREFIX ?= /usr/local
CC ?= cc
PKGS := lua5.4 libuv jansson libedit
CFLAGS ?= -O2 -g
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC $(shell pkg-config --cflags $(PKGS)) $(CFLAGS)
LDLIBS := $(shell pkg-config --libs $(PKGS))
MODLIBS := $(shell pkg-config --libs libuv jansson libedit)

CORE := core loop handle host fs json timer process stream signal caller terminal editline interrupt lock guard
BUILD ?= build
CORE_OBJ := $(CORE:%=$(BUILD)/obj/%.o)
BIN := $(BUILD)/bin/vmlua
MODULE := $(BUILD)/lib/lua/5.4/vmlua/core.so
LUA_LINK := $(BUILD)/share/lua/5.4/vmlua
BUSTED := lua5.4 /usr/bin/busted
SANITIZE := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

all: $(BIN) $(MODULE) $(LUA_LINK)

$(BUILD)/obj/%.o: src/%.c src/core.h | $(BUILD)/obj
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

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

test: deps all guests
	$(MAKE) check

check: all lint
	$(BUSTED)

# The executable built with ASan and UBSan, run over the specs that drive it
# (the bad-definition corpus, the CLI, the prompt, signals, the name lock
# and the guard, around real guests).
sanitize:
	$(MAKE) BUILD=build-asan CFLAGS="$(SANITIZE)" LDFLAGS="-fsanitize=address,undefined" \
	  build-asan/bin/vmlua build-asan/share/lua/5.4/vmlua
	VMLUA_BIN=build-asan/bin/vmlua ASAN_OPTIONS=detect_leaks=1:exitcode=99 LSAN_OPTIONS=exitcode=99 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(BUSTED) tests/bad_corpus_spec.lua tests/unit/cli_spec.lua tests/integration/cli_spec.lua tests/repl_spec.lua \
	  tests/integration/signals_spec.lua tests/integration/claim_spec.lua tests/integration/data_spec.lua

lint:
	luacheck -q lua tests bench examples

demo: deps all guests
	$(BIN) examples/dev.lua

bench: all guests
	bench/run.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/lua/5.4/vmlua \
	  $(DESTDIR)$(PREFIX)/lib/lua/5.4/vmlua
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/vmlua
	install -m 644 lua/vmlua/*.lua $(DESTDIR)$(PREFIX)/share/lua/5.4/vmlua/
	install -m 755 $(MODULE) $(DESTDIR)$(PREFIX)/lib/lua/5.4/vmlua/core.so

clean:
	rm -rf build build-asan

.PHONY: all deps guests test check sanitize lint demo bench install clean

# Builds the module against Debian's nginx-dev the way Debian builds its
# own libnginx-mod-* packages, and runs the test suite.
#
#   make                 build build/ngx_http_influencers_module.so
#   make test            the C unit tests, then the prove suite against the
#                        module and again against its AddressSanitizer build
#   make asan            the module built with AddressSanitizer
#   make test-asan       the prove suite against the ASan build only
#   make deb             build/libnginx-mod-http-influencers_<version>_<arch>.deb
#   make NGX_SRC=/path   build against an upstream nginx source tree instead
#   make fuzz            the libFuzzer harnesses (t/fuzz/), with clang, ASan
#                        and UBSan, each run for FUZZ_SECONDS (default 60)
#   make fuzz-smoke      the same, each for FUZZ_SMOKE_SECONDS (20), for CI

SHELL      := /bin/bash
NGX_SRC    ?= /usr/share/nginx/src
BUILD      ?= $(CURDIR)/build
ASAN_BUILD ?= $(CURDIR)/build-asan
MODULE     := $(BUILD)/ngx_http_influencers_module.so
ASAN_MOD   := $(ASAN_BUILD)/ngx_http_influencers_module.so
SOURCES    := config ngx_http_influencers_module.c $(wildcard src/*.c src/*.h)
WARN       := -Wall -Wextra -Wno-unused-parameter -Werror

# conf_flags only exists in Debian's nginx-dev; an upstream tree is
# configured with --with-compat and the module alone.
CONFIGURE = cd $(NGX_SRC) && \
	if [ -f ./conf_flags ]; then . ./conf_flags; else NGX_CONF_FLAGS=(--with-compat); fi && \
	./configure \
	    --with-cc-opt="$$(dpkg-buildflags --get CFLAGS 2>/dev/null) -fPIC $$(dpkg-buildflags --get CPPFLAGS 2>/dev/null) $(WARN) $(1)" \
	    --with-ld-opt="$$(dpkg-buildflags --get LDFLAGS 2>/dev/null) -fPIC $(2)" \
	    "$${NGX_CONF_FLAGS[@]}" \
	    --add-dynamic-module=$(CURDIR) --builddir=$(3) > $(3).configure.log 2>&1 \
	    || { cat $(3).configure.log; exit 1; }

.PHONY: all asan test test-unit test-prove test-asan smoke clean \
        fuzz fuzz-smoke fuzz-build

all: $(MODULE)

$(BUILD)/Makefile: config
	$(call CONFIGURE,,,$(BUILD))

$(MODULE): $(BUILD)/Makefile $(SOURCES)
	$(MAKE) -s -f $(BUILD)/Makefile -C $(NGX_SRC) modules
	@touch $@

$(ASAN_BUILD)/Makefile: config
	$(call CONFIGURE,-fsanitize=address -fno-omit-frame-pointer,-fsanitize=address,$(ASAN_BUILD))

$(ASAN_MOD): $(ASAN_BUILD)/Makefile $(SOURCES)
	$(MAKE) -s -f $(ASAN_BUILD)/Makefile -C $(NGX_SRC) modules
	@touch $@

asan: $(ASAN_MOD)

# Debian's own smoke test: the stock binary loads the module.
smoke: $(MODULE)
	@tmp=$$(mktemp -d) && \
	printf 'load_module %s;\nevents {}\n' $(MODULE) > $$tmp/nginx.conf && \
	/usr/sbin/nginx -p $$tmp -g "error_log /dev/null; pid /dev/null;" -t -q -c $$tmp/nginx.conf; \
	rc=$$?; rm -rf $$tmp; exit $$rc

UNIT_BIN := $(BUILD)/unit_validate

$(UNIT_BIN): t/unit/validate.c src/ngx_http_influencers_validate.c \
             src/ngx_http_influencers_validate.h \
             src/ngx_http_influencers_json.h src/ngx_http_influencers_siphash.h
	@mkdir -p $(BUILD)
	$(CC) -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer $(WARN) \
	    -I src -o $@ t/unit/validate.c src/ngx_http_influencers_validate.c -ljansson

test-unit: $(UNIT_BIN)
	$(UNIT_BIN)

# libFuzzer harnesses, one per parser of outside bytes.  fuzz_state
# compiles the state file's reader itself, so it needs nginx's headers and
# a configured build directory (for ngx_auto_config.h); the others need
# jansson alone.

FUZZ_CC            ?= clang
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 20
FUZZ_DIR           ?= $(BUILD)/fuzz
FUZZ_ARTIFACTS     ?= $(FUZZ_DIR)/artifacts
FUZZERS            := body headers directory state
FUZZ_BINS          := $(FUZZERS:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_CFLAGS        := -g -O1 -fsanitize=fuzzer,address,undefined \
                      -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
                      $(WARN) -I src
FUZZ_NGX_INCS       = -I $(NGX_SRC)/src/core -I $(NGX_SRC)/src/event \
                      -I $(NGX_SRC)/src/event/modules \
                      -I $(NGX_SRC)/src/os/unix -I $(BUILD) \
                      -I $(NGX_SRC)/src/http -I $(NGX_SRC)/src/http/modules \
                      -I $(NGX_SRC)/src/http/v2

$(FUZZ_DIR)/fuzz_body $(FUZZ_DIR)/fuzz_headers: $(FUZZ_DIR)/fuzz_%: \
        t/fuzz/fuzz_%.c src/ngx_http_influencers_validate.c \
        src/ngx_http_influencers_validate.h
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< src/ngx_http_influencers_validate.c \
	    -ljansson

$(FUZZ_DIR)/fuzz_directory: t/fuzz/fuzz_directory.c \
        src/ngx_http_influencers_directory.c \
        src/ngx_http_influencers_directory.h \
        src/ngx_http_influencers_validate.c src/ngx_http_influencers_validate.h
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< src/ngx_http_influencers_directory.c \
	    src/ngx_http_influencers_validate.c -ljansson

$(FUZZ_DIR)/fuzz_state: t/fuzz/fuzz_state.c $(BUILD)/Makefile $(SOURCES)
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_NGX_INCS) -o $@ $<

fuzz-build: $(FUZZ_BINS)

fuzz: $(FUZZ_BINS)
	t/fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_ARTIFACTS) $(FUZZERS)

fuzz-smoke: $(FUZZ_BINS)
	t/fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SMOKE_SECONDS) $(FUZZ_ARTIFACTS) \
	    $(FUZZERS)

test-prove: $(MODULE) smoke
	INFLUENCERS_MODULE=$(MODULE) prove -r t/

test: test-unit test-prove test-asan

test-asan: $(ASAN_MOD)
	INFLUENCERS_MODULE=$(ASAN_MOD) INFLUENCERS_ASAN=1 prove -r t/

# The Debian package, built the way Debian builds its libnginx-mod-*
# packages (dh-sequence-nginx: the nginx_mod build system and dh_nginx).
# The packaging lives in docker/debian/; a source tree with it as debian/
# is assembled under $(DEB_ROOT) and dpkg-buildpackage runs there.  The
# .deb is copied to $(BUILD)/; the dbgsym package, .buildinfo and
# .changes stay in $(DEB_ROOT)/.  Needs dpkg-dev and debhelper.
DEB_ROOT ?= $(BUILD)/deb
DEB_SRC  := $(DEB_ROOT)/libnginx-mod-http-influencers

.PHONY: deb
deb:
	rm -rf $(DEB_ROOT) $(BUILD)/libnginx-mod-http-influencers_*.deb
	mkdir -p $(DEB_SRC)/src
	cp config ngx_http_influencers_module.c README.md $(DEB_SRC)/
	cp src/*.c src/*.h $(DEB_SRC)/src/
	cp -r docker/debian $(DEB_SRC)/debian
	cd $(DEB_SRC) && dpkg-buildpackage -us -uc -b
	cp $(DEB_ROOT)/libnginx-mod-http-influencers_*.deb $(BUILD)/
	@ls -1 $(BUILD)/libnginx-mod-http-influencers_*.deb

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(BUILD).configure.log $(ASAN_BUILD).configure.log

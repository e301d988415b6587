# Builds the module against Debian's nginx-dev the way Debian builds its
# own libnginx-mod-* packages, and runs the test suite.
#
#   make                 build build/ngx_http_influencers_module.so
#   make test            the C unit tests, then the prove suite against the
#                        module and again against its AddressSanitizer build
#   make asan            the module built with AddressSanitizer
#   make test-asan       the prove suite against the ASan build only
#   make NGX_SRC=/path   build against an upstream nginx source tree instead

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

.PHONY: all asan test test-unit test-prove test-asan smoke clean

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

$(UNIT_BIN): t/unit/validate.c src/ngx_http_influencers_validate.c src/ngx_http_influencers_validate.h
	@mkdir -p $(BUILD)
	$(CC) -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer $(WARN) \
	    -I src -o $@ t/unit/validate.c src/ngx_http_influencers_validate.c -ljansson

test-unit: $(UNIT_BIN)
	$(UNIT_BIN)

test-prove: $(MODULE) smoke
	INFLUENCERS_MODULE=$(MODULE) prove -r t/

test: test-unit test-prove test-asan

test-asan: $(ASAN_MOD)
	INFLUENCERS_MODULE=$(ASAN_MOD) INFLUENCERS_ASAN=1 prove -r t/

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(BUILD).configure.log $(ASAN_BUILD).configure.log

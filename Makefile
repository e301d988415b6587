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
#
# Upstream nginx, from its released sources in NGINX_ARCHIVES (default
# ../shared/nginx beside the repository; V=1.30.4 is nginx-1.30.4.tar.gz):
#
#   make nginx V=...          unpack the archive into build-nginx/V/, configure
#                             it with auto/configure, --with-compat, the
#                             modules the tests use and the module as a
#                             dynamic one, and build both (make -j2)
#   make test-nginx V=...     the smoke load, then the prove suite against that
#                             nginx and its .so
#   make load-nginx V=...     the smoke load, then nginx -t of the README's
#                             complete configurations, each served once
#                             (t/17-readme.t)
#   make nginx-static V=...   nginx with the module built in (--add-module),
#                             in build-nginx/static-V/
#   make test-static V=...    that build, then t/00 and t/17 against it
#   make config-check [V=...] configure stops, naming the package, when
#                             jansson, libcrypto or hiredis is missing (in
#                             Debian's tree, or in a fresh copy of V's)

SHELL      := /bin/bash
NGX_SRC    ?= /usr/share/nginx/src
BUILD      ?= $(CURDIR)/build
ASAN_BUILD ?= $(CURDIR)/build-asan
MODULE     := $(BUILD)/ngx_http_influencers_module.so
ASAN_MOD   := $(ASAN_BUILD)/ngx_http_influencers_module.so
SOURCES    := config ngx_http_influencers_module.c \
              $(wildcard src/*/*.c src/*/*.h)
WARN       := -Wall -Wextra -Wno-unused-parameter -Werror

# conf_flags only exists in Debian's nginx-dev; an upstream tree is
# configured with --with-compat and the module alone.  A release tarball
# has ./configure, nginx's git tree (and the archives here) auto/configure.
CONFIGURE = cd $(NGX_SRC) && \
	if [ -f ./conf_flags ]; then . ./conf_flags; else NGX_CONF_FLAGS=(--with-compat); fi && \
	if [ -x ./configure ]; then c=./configure; else c=auto/configure; fi && \
	$$c \
	    --with-cc-opt="$$(dpkg-buildflags --get CFLAGS 2>/dev/null) -fPIC $$(dpkg-buildflags --get CPPFLAGS 2>/dev/null) $(WARN) $(1)" \
	    --with-ld-opt="$$(dpkg-buildflags --get LDFLAGS 2>/dev/null) -fPIC $(2)" \
	    "$${NGX_CONF_FLAGS[@]}" \
	    --add-dynamic-module=$(CURDIR) --builddir=$(3) > $(3).configure.log 2>&1 \
	    || { cat $(3).configure.log; exit 1; }

.PHONY: all asan test test-unit test-prove test-asan smoke clean \
        fuzz fuzz-smoke fuzz-build \
        nginx test-nginx load-nginx nginx-static test-static config-check

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

# Debian's own smoke test: the stock binary loads the module.  $(1) is the
# nginx binary, $(2) the .so; -e keeps an upstream build, whose error log
# is <prefix>/logs/error.log, from looking for one under the temporary
# prefix.
SMOKE = tmp=$$(mktemp -d) && \
	printf 'load_module %s;\nevents {}\n' $(2) > $$tmp/nginx.conf && \
	$(1) -p $$tmp -e stderr -g "error_log /dev/null; pid /dev/null;" -t -q -c $$tmp/nginx.conf; \
	rc=$$?; rm -rf $$tmp; exit $$rc

smoke: $(MODULE)
	@$(call SMOKE,/usr/sbin/nginx,$(MODULE))

UNIT_BIN := $(BUILD)/unit_validate

$(UNIT_BIN): t/unit/validate.c src/common/ngx_http_influencers_validate.c \
             src/common/ngx_http_influencers_validate.h \
             src/common/ngx_http_influencers_json.h \
             src/common/ngx_http_influencers_siphash.h
	@mkdir -p $(BUILD)
	$(CC) -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer $(WARN) \
	    -I src/common -o $@ t/unit/validate.c \
	    src/common/ngx_http_influencers_validate.c -ljansson

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
                      $(WARN) -I src/common
FUZZ_NGX_INCS       = -I src/http -I src/store \
                      -I $(NGX_SRC)/src/core -I $(NGX_SRC)/src/event \
                      -I $(NGX_SRC)/src/event/modules \
                      -I $(NGX_SRC)/src/os/unix -I $(BUILD) \
                      -I $(NGX_SRC)/src/http -I $(NGX_SRC)/src/http/modules \
                      -I $(NGX_SRC)/src/http/v2

$(FUZZ_DIR)/fuzz_body $(FUZZ_DIR)/fuzz_headers: $(FUZZ_DIR)/fuzz_%: \
        t/fuzz/fuzz_%.c src/common/ngx_http_influencers_validate.c \
        src/common/ngx_http_influencers_validate.h
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< \
	    src/common/ngx_http_influencers_validate.c \
	    -ljansson

$(FUZZ_DIR)/fuzz_directory: t/fuzz/fuzz_directory.c \
        src/common/ngx_http_influencers_directory.c \
        src/common/ngx_http_influencers_directory.h \
        src/common/ngx_http_influencers_validate.c \
        src/common/ngx_http_influencers_validate.h
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< \
	    src/common/ngx_http_influencers_directory.c \
	    src/common/ngx_http_influencers_validate.c -ljansson

$(FUZZ_DIR)/fuzz_state: t/fuzz/fuzz_state.c $(BUILD)/Makefile $(SOURCES)
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_NGX_INCS) -o $@ $<

fuzz-build: $(FUZZ_BINS)

fuzz: $(FUZZ_BINS)
	t/fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_ARTIFACTS) $(FUZZERS)

fuzz-smoke: $(FUZZ_BINS)
	t/fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SMOKE_SECONDS) $(FUZZ_ARTIFACTS) \
	    $(FUZZERS)

# The prove suite.  Most tests spend their time waiting on sockets and
# timers: PROVE_JOBS of them run at once.  The ones that keep both CPUs
# busy (concurrency bursts, the fleet drills) or that time answers which a
# busy machine delays run afterwards, one at a time.  Both parts always
# run; the suite fails if either does.  PROVE_JOBS=1 runs it as
# `prove -r t/` does.
PROVE_JOBS  ?= 3
PROVE_ALONE ?= t/31-idem-concurrency.t t/39-idem-org-share.t \
               t/41-fleet-concurrency.t t/42-fleet-failures.t \
               t/56-fleet-cluster.t t/60-faults-reload.t \
               t/62-faults-backend-down.t t/64-fleet-drills.t
PROVE_REST   = $(filter-out $(PROVE_ALONE),$(sort $(wildcard t/*.t)))

# Tests whose subject is not nginx's: the Redis topologies themselves
# (t/48 loads no module) run in the Debian suite only; the fleet's
# failovers (Sentinel, wait=, Cluster, the drills) run against Debian's
# nginx, plain and under ASan, not again against every other nginx (the
# module's connections to Redis are tested on each by t/40-47 and t/49).
PROVE_NO_ASAN     ?= t/48-redis-topologies.t
PROVE_NO_VERSIONS ?= t/48-redis-topologies.t t/54-fleet-sentinel.t \
                     t/55-fleet-wait.t t/56-fleet-cluster.t \
                     t/64-fleet-drills.t

# $(call PROVE_SUITE,ENV=... ENV=...[,files left out])
define PROVE_SUITE
rc=0; \
$(1) prove -j$(PROVE_JOBS) $(filter-out $(2),$(PROVE_REST)) || rc=1; \
$(1) prove $(filter-out $(2),$(PROVE_ALONE)) || rc=1; \
exit $$rc
endef

test-prove: $(MODULE) smoke
	@$(call PROVE_SUITE,INFLUENCERS_MODULE=$(MODULE))

test: test-unit test-prove test-asan

test-asan: $(ASAN_MOD)
	@$(call PROVE_SUITE,INFLUENCERS_MODULE=$(ASAN_MOD) INFLUENCERS_ASAN=1,$(PROVE_NO_ASAN))

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
	mkdir -p $(DEB_SRC)
	cp config ngx_http_influencers_module.c README.md $(DEB_SRC)/
	cp -r src $(DEB_SRC)/src
	cp -r docker/debian $(DEB_SRC)/debian
	cd $(DEB_SRC) && dpkg-buildpackage -us -uc -b
	cp $(DEB_ROOT)/libnginx-mod-http-influencers_*.deb $(BUILD)/
	@ls -1 $(BUILD)/libnginx-mod-http-influencers_*.deb

# ---------------------------------------------------------------------------
# Upstream nginx.  Each version is unpacked and built in a directory of its
# own, the way a user builds nginx from source: auto/configure (./configure
# in a release tarball) in the source tree, objs/ inside it, the module
# named with --add-dynamic-module (or --add-module for the static build).
# nginx's own CFLAGS have -W -Wall -Werror; WARN adds -Wextra.  The build
# is incremental: nginx's objs/Makefile knows the module's sources.

NGINX_ARCHIVES ?= $(CURDIR)/../shared/nginx
NGINX_BUILD    ?= $(CURDIR)/build-nginx
NGINX_JOBS     ?= 2
NGINX_FLAGS    ?= --with-compat --with-debug --with-threads \
                  --with-http_ssl_module --with-http_v2_module \
                  --with-http_auth_request_module \
                  --with-http_stub_status_module
NGINX_VERSIONS := $(sort $(patsubst nginx-%.tar.gz,%,$(notdir \
                      $(wildcard $(NGINX_ARCHIVES)/nginx-*.tar.gz))))

NGX_V_DIR    = $(NGINX_BUILD)/$(V)
NGX_V_BIN    = $(NGX_V_DIR)/objs/nginx
NGX_V_MOD    = $(NGX_V_DIR)/objs/ngx_http_influencers_module.so
NGX_S_DIR    = $(NGINX_BUILD)/static-$(V)
NGX_V_NEEDED = $(if $(wildcard $(NGINX_ARCHIVES)/nginx-$(V).tar.gz),, \
                   $(error no $(NGINX_ARCHIVES)/nginx-$(V).tar.gz: name a \
                           version, V=one of: $(or $(NGINX_VERSIONS),none)))

# $(1): the directory to unpack into, $(2): the version
NGX_UNPACK = rm -rf $(1) && mkdir -p $(1) && \
	tar -xzf $(NGINX_ARCHIVES)/nginx-$(2).tar.gz -C $(1) \
	    --strip-components=1 && \
	touch $(1)/auto/configure

# $(1): the directory, $(2): how the module is added
NGX_CONFIGURE = echo "configuring $(1) (log: $(1)/configure.log)" && \
	cd $(1) && \
	auto/configure $(NGINX_FLAGS) --with-cc-opt="$(WARN)" \
	    $(2)=$(CURDIR) > configure.log 2>&1 \
	    || { cat configure.log; exit 1; }

# $(1): the directory
NGX_MAKE = echo "building $(1) (make -j$(NGINX_JOBS), log: $(1)/make.log)" && \
	$(MAKE) -C $(1) -j$(NGINX_JOBS) > $(1)/make.log 2>&1 \
	|| { grep -E 'error|warning' $(1)/make.log || tail -n 40 $(1)/make.log; \
	     exit 1; }

$(NGINX_BUILD)/%/auto/configure: $(NGINX_ARCHIVES)/nginx-%.tar.gz
	$(call NGX_UNPACK,$(NGINX_BUILD)/$*,$*)

$(NGINX_BUILD)/static-%/auto/configure: $(NGINX_ARCHIVES)/nginx-%.tar.gz
	$(call NGX_UNPACK,$(NGINX_BUILD)/static-$*,$*)

$(NGINX_BUILD)/%/objs/Makefile: $(NGINX_BUILD)/%/auto/configure config
	@$(call NGX_CONFIGURE,$(NGINX_BUILD)/$*,--add-dynamic-module)

$(NGINX_BUILD)/static-%/objs/Makefile: \
        $(NGINX_BUILD)/static-%/auto/configure config
	@$(call NGX_CONFIGURE,$(NGINX_BUILD)/static-$*,--add-module)

nginx:
	$(NGX_V_NEEDED)
	@$(MAKE) -s $(NGX_V_DIR)/objs/Makefile
	@$(call NGX_MAKE,$(NGX_V_DIR))
	@$(call SMOKE,$(NGX_V_BIN),$(NGX_V_MOD))
	@$(NGX_V_BIN) -v

test-nginx: nginx
	@$(call PROVE_SUITE,INFLUENCERS_NGINX=$(NGX_V_BIN) \
	    INFLUENCERS_MODULE=$(NGX_V_MOD),$(PROVE_NO_VERSIONS))

load-nginx: nginx
	INFLUENCERS_NGINX=$(NGX_V_BIN) INFLUENCERS_MODULE=$(NGX_V_MOD) \
	    prove t/17-readme.t

nginx-static:
	$(NGX_V_NEEDED)
	@$(MAKE) -s $(NGX_S_DIR)/objs/Makefile
	@$(call NGX_MAKE,$(NGX_S_DIR))
	@$(NGX_S_DIR)/objs/nginx -V 2>&1 | grep -q -- '--add-module=$(CURDIR)'
	@$(NGX_S_DIR)/objs/nginx -v

test-static: nginx-static
	INFLUENCERS_NGINX=$(NGX_S_DIR)/objs/nginx INFLUENCERS_MODULE=static \
	    prove t/00-harness.t t/17-readme.t

config-check:
	t/config-check.sh $(if $(V),$(NGINX_ARCHIVES)/nginx-$(V).tar.gz,$(NGX_SRC))

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(BUILD).configure.log $(ASAN_BUILD).configure.log \
	       $(NGINX_BUILD)

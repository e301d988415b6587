package InfTest;

# A small test harness for the influencers module, in core Perl only.
#
#   my $t = InfTest->new;                  # temp dir, free loopback ports
#   $t->write_directory;                   # the fixtures below, keys hashed
#   $t->conf($t->default_conf(location => 'influencers_retry_after 7s;'));
#   $t->start_backend;                     # t/lib/backend.pl on %%BACKEND_PORT%%
#   $t->run;                               # nginx in the foreground (fork/exec)
#   my $r = $t->create(body => '{}');      # POST /v1/projects/.../influencers
#   $r->status, $r->header('x-request-id'), $r->json, $r->body
#   $t->check_log_clean;                   # no [alert]/[emerg]/Sanitizer lines
#
# Or InfTest->setup(%default_conf_options) for the usual start.  Also:
# http()/raw() (one connection, malformed bytes welcome), session() (one
# keepalive connection), test_config() (nginx -t), reload(), stop(),
# worker_pids(), set_backend()/backend_requests(), check_error(),
# check_validation(), check_accepted() (assertion subtests).  For the
# idempotency tests (t/3*.t): idem(), idem_request(), idem_async() with
# finish_async() (a request kept in flight), stats() on STATS_LOCATION,
# hup()/new_workers(), log_lines()/count_log(), http_date(),
# check_new_job(), check_replay().
# Fleet mode (t/4*.t): start_redis() and its helpers, peer() for a second
# gateway node (see "Fleet mode" below).  Shared by several tests:
# endpoint_server() (another server for default_conf(http => ..)),
# burst()/check_burst() (forked clients released together, on one node or
# two: t/31, t/41), fork_clients()/reap() (clients that leave their
# results in a file each), spawn() (a server process), kill9(), and the
# module's messages (use InfTest qw(:messages)).
# Processes are stopped by pid at the end (END/DESTROY, a watchdog if the
# test is killed), and the temp dir removed.
#
# The nginx under test: nginx_version() ("1.30.4", from the binary's
# nginx -V), nginx_at_least('1.29.4'), nginx_configure() (its configure
# arguments), nginx_knows('max_headers 1000') (a directive, for what a
# distribution backported).  A test whose answer depends on nginx's
# version asks these, never names a binary.
#
# Environment: INFLUENCERS_MODULE (path to the .so, default the build/ of
# the checkout this file is in; a run stops when it is missing; "static"
# for an nginx built with the module in it, --add-module: every
# "load_module %%MODULE%%;" line is then left out),
# INFLUENCERS_ASAN=1 (run nginx with the ASan runtime preloaded),
# INFLUENCERS_LEAVE=1 (keep the temp dir), INFLUENCERS_NGINX (the binary,
# default /usr/sbin/nginx), INFLUENCERS_LOG_LEVEL=info (every test's
# error_log level, whatever the test asks), INFLUENCERS_KEEP_LOGS=/dir (copy
# each test dir's logs, backend records and state files to
# /dir/<test>/<temp dir>/ before it is removed; t/bench/secrets.sh).

use strict;
use warnings;

use Exporter 'import';
use File::Temp ();
use File::Path ();
use File::Basename ();
use File::Spec ();
use Cwd ();
use IO::Socket::INET;
use IO::Select;
use JSON::PP ();
use Digest::SHA ();
use Compress::Zlib ();
use POSIX ();
use Time::HiRes ();
use Time::Local ();
use Test::More ();
use Scalar::Util ();

our @EXPORT_OK = qw(
    K_WRITE K_READ K_NOSCOPE K_MULTI K_WRITER K_GLOBEX K_UNKNOWN
    P_FEMALE P_MALE P_NB P_ANY P_NONE P_GLOBEX P_UNKNOWN
    ULID_RE REQID_RE INFID_RE check_resent
    ulid_ms iso_ms json_decode json_encode module_path have_module
    nginx_version nginx_at_least nginx_configure nginx_knows
    ENDPOINT_LOCATION ACCEPT_RE endpoint_server
    check_error check_validation check_accepted without_request_id
    finish_async sleep_until
    STATS_LOCATION http_date check_replay check_new_job
    state_record state_snapshot
);

# the module's messages, for the tests that check answers' details
# (use InfTest qw(:messages))
our $EM      = "\x{2014}";
our $NAME    = "Unrecognized key $EM name is server-generated.";
our $UNK     = 'Unrecognized key.';
our $GENUM   = "Invalid enum value. Expected 'male' | 'female' | 'non_binary'";
our $AGENUM  = "Invalid enum value. Expected 'teen' | 'young_adult' | 'adult' "
             . "| 'mid_adult' | 'mature' | 'senior'";
our $NUMBER  = 'Expected string, received number';
our $BADJSON = 'Invalid JSON.';
our $BADUTF8 = 'Invalid UTF-8.';
our $BADESC  = 'Invalid Unicode escape.';
our $DEEP    = 'Nesting too deep.';
our $IDEM_MSG = 'Invalid Idempotency-Key header.';
our $IDEM_BAD = { 'Idempotency-Key' => ['Must be 1-255 visible ASCII characters.'] };
our $IDEM_TWICE = { 'Idempotency-Key' => ['Must be sent once.'] };
my @MESSAGES = qw($EM $NAME $UNK $GENUM $AGENUM $NUMBER $BADJSON $BADUTF8
                  $BADESC $DEEP $IDEM_MSG $IDEM_BAD $IDEM_TWICE);

our %EXPORT_TAGS = (all => [@EXPORT_OK], messages => \@MESSAGES);
push @EXPORT_OK, @MESSAGES;

# ---------------------------------------------------------------------------
# Fixtures: API keys in clear (the directory file only holds their digests),
# and projects of two orgs.

use constant {
    K_WRITE   => 'sk_test_acme_write_4f9a0c7e1b',
    K_READ    => 'sk_test_acme_read_88d1e0aa5c',
    K_NOSCOPE => 'sk_test_acme_noscope_2b7c91',
    K_MULTI   => 'sk_test_acme_multi_c0ffee11',
    K_WRITER  => 'sk_test_acme_writer_5d5d5d',
    K_GLOBEX  => 'sk_test_globex_write_9e8d7c',
    K_UNKNOWN => 'sk_test_nobody_00000000000',

    P_FEMALE  => '0b5e8f8a-6a2c-4c1e-9d3b-1f2e3d4c5b6a',
    P_MALE    => '1c6f9a9b-7b3d-4d2f-8e4c-2a3b4c5d6e7f',
    P_NB      => '2d7a0bac-8c4e-4e3a-9f5d-3b4c5d6e7f80',
    P_ANY     => '3e8b1cbd-9d5f-4f4b-a06e-4c5d6e7f8091',
    P_NONE    => '4f9c2dce-ae60-405c-b17f-5d6e7f8091a2',
    P_GLOBEX  => '5a0d3edf-bf71-416d-8280-6e7f8091a2b3',
    P_UNKNOWN => '6b1e4fe0-c082-427e-9391-7f8091a2b3c4',
};

use constant {
    # Crockford base32 ULID: 10 time chars (first one <= 7), 16 random chars
    ULID_RE  => qr/[0-7][0-9A-HJKMNP-TV-Z]{25}/,
    REQID_RE => qr/req_[0-9a-f]{32}/,
    INFID_RE => qr/inf_[0-9a-f]{32}/,
    ENDPOINT_LOCATION => '~ ^/v1/projects/[^/]+/influencers$',
    # the counters location that stats() reads, for default_conf(server => ..)
    STATS_LOCATION => 'location = /_stats { influencers_stats zone=jobs; }',
};

# the 202 body, byte for byte: $1 jobId, $2 influencerId
use constant ACCEPT_RE => qr/^\{"jobId":"(job_[0-7][0-9A-HJKMNP-TV-Z]{25})","kind":"influencer_create","status":"running","influencerId":"(inf_[0-9a-f]{32})","locationUrl":"\/v1\/jobs\/\1"\}$/;

sub default_keys {
    return [
        { key => K_WRITE,   org => 'org_acme',   scopes => ['influencers:write'],
          label => 'acme prod' },
        { key => K_READ,    org => 'org_acme',   scopes => ['influencers:read'] },
        { key => K_NOSCOPE, org => 'org_acme',   scopes => [] },
        { key => K_MULTI,   org => 'org_acme',
          scopes => ['projects:read', 'influencers:write', 'jobs:read'] },
        { key => K_WRITER,  org => 'org_acme',   scopes => ['influencers:writer'] },
        { key => K_GLOBEX,  org => 'org_globex', scopes => ['influencers:write'] },
    ];
}

sub default_projects {
    return [
        { id => P_FEMALE, org => 'org_acme', targetGender => 'female' },
        { id => P_MALE,   org => 'org_acme', targetGender => 'male' },
        { id => P_NB,     org => 'org_acme', targetGender => 'non_binary' },
        { id => P_ANY,    org => 'org_acme', targetGender => 'any' },
        { id => P_NONE,   org => 'org_acme' },
        { id => P_GLOBEX, org => 'org_globex', targetGender => 'male' },
    ];
}

# ---------------------------------------------------------------------------
# Small helpers

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

sub json_decode { my ($s) = @_; return eval { $JSON->decode($s) }; }
sub json_encode { my ($v) = @_; return $JSON->encode($v); }

# the checkout this file belongs to (t/lib/../..), wherever it is
my $TOP = Cwd::abs_path(File::Spec->catdir(
    File::Basename::dirname(File::Spec->rel2abs(__FILE__)), '..', '..'));

sub module_path {
    return $ENV{INFLUENCERS_MODULE}
        || "$TOP/build/ngx_http_influencers_module.so";
}

# the module is built into the nginx under test (INFLUENCERS_MODULE=static)
sub module_static { return module_path() eq 'static'; }

# true when the module is built; otherwise the whole run stops and says so
# (a suite that skips every test would look like one that passes)
sub have_module {
    my $m = module_path();
    return 1 if -f $m;
    if (module_static()) {
        return 1 if nginx_configure() =~ /--add-module=\S*/;
        Test::More::BAIL_OUT('INFLUENCERS_MODULE=static, but ' . nginx_binary()
                             . ' was not configured with --add-module');
    }
    Test::More::BAIL_OUT("the module is not built: no $m ("
        . ($ENV{INFLUENCERS_MODULE} ? 'INFLUENCERS_MODULE'
                                    : "run make in $TOP, or set INFLUENCERS_MODULE")
        . ')');
}

sub nginx_binary { return $ENV{INFLUENCERS_NGINX} || '/usr/sbin/nginx'; }

# what the binary says of itself (nginx -V), read once
my %NGINX_V;

sub _nginx_v {
    return \%NGINX_V if %NGINX_V;
    my $bin = nginx_binary();
    my $out = `'$bin' -V 2>&1`;
    my ($v) = $out =~ m{^nginx version: nginx/(\d+\.\d+\.\d+)}m;
    Test::More::BAIL_OUT("cannot tell the version of $bin (nginx -V): $out")
        unless defined $v;
    my ($args) = $out =~ /^configure arguments: (.*)$/m;
    %NGINX_V = (version => $v, configure => $args // '');
    return \%NGINX_V;
}

# "1.30.4"
sub nginx_version { return _nginx_v()->{version}; }

# the nginx under test is this version or a later one
sub nginx_at_least {
    my ($want) = @_;
    my @have = split /\./, nginx_version();
    my @want = split /\./, $want;
    for my $i (0 .. 2) {
        return $have[$i] > $want[$i] if $have[$i] != $want[$i];
    }
    return 1;
}

sub nginx_configure { return _nginx_v()->{configure}; }

# the nginx under test takes this directive in its http block ("max_headers
# 1000"): nginx -t of a configuration with it, once.  For what a
# distribution backports, which the version does not tell (Debian 12's
# 1.22.1 has max_headers since 1.22.1-9+deb12u8).
my %KNOWS;

sub nginx_knows {
    my ($directive) = @_;
    return $KNOWS{$directive} if exists $KNOWS{$directive};
    my $t = InfTest->new;
    $t->conf("%%MAIN_GLOBALS%%\nevents { }\nhttp {\n    %%HTTP_GLOBALS%%\n"
             . "    $directive;\n}\n");
    my ($rc) = $t->test_config;
    $t->cleanup;
    return $KNOWS{$directive} = $rc == 0 ? 1 : 0;
}

# the 48-bit millisecond time of a ULID (with or without "job_")
sub ulid_ms {
    my ($u) = @_;
    $u =~ s/^job_//;
    my $alphabet = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    my $ms = 0;
    for my $c (split //, substr($u, 0, 10)) {
        my $v = index($alphabet, uc $c);
        return undef if $v < 0;
        $ms = $ms * 32 + $v;
    }
    return $ms;
}

# milliseconds since the epoch -> 2026-11-28T09:56:07.123Z
sub iso_ms {
    my ($ms) = @_;
    my $s = int($ms / 1000);
    my @t = gmtime($s);
    return sprintf('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ',
        $t[5] + 1900, $t[4] + 1, $t[3], $t[2], $t[1], $t[0], $ms - $s * 1000);
}

my $ASAN_LIB;

sub _asan_lib {
    return $ASAN_LIB if defined $ASAN_LIB;
    my $p = `gcc -print-file-name=libasan.so 2>/dev/null`;
    chomp $p;
    $ASAN_LIB = $p;
    return $p;
}

my @INSTANCES;

# a test killed by a signal (a closed pipe under `prove | head`, ^C) still
# runs its END block, which stops nginx and the backends
for my $sig (qw(INT TERM HUP PIPE)) {
    $SIG{$sig} = sub { exit 1 } if !defined $SIG{$sig} || $SIG{$sig} eq ''
                                    || $SIG{$sig} eq 'DEFAULT';
}

# ---------------------------------------------------------------------------
# Construction and files

sub new {
    my ($class, %o) = @_;

    my $dir = File::Temp::tempdir('inf-test-XXXXXXXXXX', TMPDIR => 1,
                                  CLEANUP => 0);
    # workers run as nobody when the tests run as root
    chmod 0755, $dir;

    my $self = bless {
        dir        => $dir,
        owner      => $$,
        ports      => {},
        used_ports => {},
        backends   => {},
        nginx_pid  => undef,
        log_level  => $ENV{INFLUENCERS_LOG_LEVEL} || $o{log_level} || 'debug',
        module     => module_path(),
        timeout    => $o{timeout} || 5,
    }, $class;

    push @INSTANCES, $self;
    Scalar::Util::weaken($INSTANCES[-1]);

    return $self;
}

# the usual start: directory file, default_conf(%conf), backend, nginx
#   InfTest->setup(location => '...', log_level => 'info', control => {...})
sub setup {
    my ($class, %o) = @_;
    my $t = $class->new(log_level => delete $o{log_level});
    my $control = delete $o{control};
    my $no_backend = delete $o{no_backend};
    $t->write_directory;
    $t->conf($t->default_conf(%o));
    $t->start_backend(control => $control) unless $no_backend;
    $t->run;
    return $t;
}

sub dir { return $_[0]->{dir}; }

sub path { my ($s, $name) = @_; return "$s->{dir}/$name"; }

sub write_file {
    my ($s, $name, $content) = @_;
    my $path = $name =~ m{^/} ? $name : "$s->{dir}/$name";
    my $tmp = "$path.tmp$$";
    open my $fh, '>:raw', $tmp or die "cannot write $tmp: $!";
    print {$fh} $content;
    close $fh or die "cannot close $tmp: $!";
    rename $tmp, $path or die "cannot rename $tmp: $!";
    chmod 0644, $path;
    return $path;
}

sub read_file {
    my ($s, $name) = @_;
    my $path = $name =~ m{^/} ? $name : "$s->{dir}/$name";
    open my $fh, '<:raw', $path or return undef;
    local $/;
    my $c = <$fh>;
    close $fh;
    return $c;
}

sub sha256_hex { return Digest::SHA::sha256_hex($_[-1]); }

# write_directory(keys => [{key => 'clear', org => .., scopes => [..]}],
#                 projects => [...], file => 'directory.json')
# Keys given in clear get their sha256; a key entry may carry 'sha256'
# directly (used as is) and any extra fields (copied, for error tests).
sub directory_json {
    my ($s, %o) = @_;
    my $keys = $o{keys} || default_keys();
    my $projects = $o{projects} || default_projects();

    my @k;
    for my $e (@$keys) {
        my %x = %$e;
        if (exists $x{key}) {
            $x{sha256} = Digest::SHA::sha256_hex(delete $x{key});
        }
        push @k, \%x;
    }

    # keep a readable, stable field order
    my $enc = JSON::PP->new->utf8->canonical->pretty;
    return $enc->encode({ keys => \@k, projects => $projects });
}

sub write_directory {
    my ($s, %o) = @_;
    my $file = delete $o{file} || 'directory.json';
    return $s->write_file($file, $s->directory_json(%o));
}

# ---------------------------------------------------------------------------
# Ports

# Ports come from below the kernel's ephemeral range (32768 and up on
# Linux), where no outgoing connection of a busy test takes one meanwhile,
# and each is claimed in a directory shared by every test of the machine
# (a file named after the port, holding the claimer's pid, made with
# O_EXCL): test files that run side by side (make test runs three at a
# time) never get one port twice, as bind(0) and close could give them.
# A claim whose process has gone is taken over; each process removes its
# own at its end (a forked child its own, not its parent's).
my $PORT_DIR = File::Spec->catdir(File::Spec->tmpdir, 'influencers-test-ports');
my ($PORT_LOW, $PORT_SPAN) = (20000, 12000);
my @PORT_CLAIMS;    # [file, pid of the claimer]

sub _claim_port {
    my ($port) = @_;
    mkdir $PORT_DIR, 0777;
    my $file = "$PORT_DIR/$port";
    for (1 .. 2) {
        if (sysopen my $fh, $file,
                    POSIX::O_WRONLY() | POSIX::O_CREAT() | POSIX::O_EXCL())
        {
            print {$fh} "$$\n";
            close $fh;
            push @PORT_CLAIMS, [$file, $$];
            return 1;
        }
        open my $in, '<', $file or next;    # released meanwhile
        my $owner = <$in> // '';
        close $in;
        return 0 if $owner =~ /^(\d+)$/ && kill 0, $1;
        unlink $file;                         # its claimer has gone
    }
    return 0;
}

# the claims of processes that have gone (a child that claimed, then
# exec'd or left by _exit)
sub _sweep_port_claims {
    opendir my $dh, $PORT_DIR or return;
    for my $port (grep { /^\d+$/ } readdir $dh) {
        my $file = "$PORT_DIR/$port";
        open my $in, '<', $file or next;
        my $owner = <$in> // '';
        close $in;
        unlink $file if $owner =~ /^(\d+)$/ && !kill 0, $1;
    }
    closedir $dh;
}

sub _free_port {
    my ($s) = @_;
    for (1 .. 500) {
        my $port = $PORT_LOW + int rand $PORT_SPAN;
        next if $s->{used_ports}{$port};
        my $sock = IO::Socket::INET->new(
            LocalAddr => '127.0.0.1', LocalPort => $port, Proto => 'tcp',
            Listen => 1, ReuseAddr => 1,
        ) or next;
        close $sock;
        next unless _claim_port($port);
        $s->{used_ports}{$port} = 1;
        return $port;
    }
    die "no free port found";
}

# port() is the main nginx port; port('backend'), port('auth'), port(1)...
# (names are case-insensitive: %%PORT_OTHER%% is port('other'))
sub port {
    my ($s, $name) = @_;
    $name = defined $name ? lc $name : 'main';
    return $s->{ports}{$name} //= $s->_free_port;
}

# ---------------------------------------------------------------------------
# Configuration

sub http_globals {
    my ($s) = @_;
    my $d = $s->{dir};
    return join "\n    ",
        "access_log $d/access.log;",
        "client_body_temp_path $d/client_body_temp;",
        "proxy_temp_path $d/proxy_temp;",
        "fastcgi_temp_path $d/fastcgi_temp;",
        "uwsgi_temp_path $d/uwsgi_temp;",
        "scgi_temp_path $d/scgi_temp;";
}

sub main_globals {
    my ($s) = @_;
    my $d = $s->{dir};
    return join "\n",
        "pid $d/nginx.pid;",
        "error_log $d/error.log $s->{log_level};";
}

# The "Typical server" of the spec, with pieces that tests can override:
#   zone        influencers_zone arguments         ('zone=jobs:1m')
#   main        extra main-context directives
#   http        extra http-level directives
#   server      extra server-level directives
#   location    extra directives in the endpoint location
#   identity    the identity directive(s) of the endpoint location
#   match       the endpoint location's match        (ENDPOINT_LOCATION)
#   render      extra directives in the /_render location
#   upstream    extra parameters of the upstream's server line
#   read_timeout / connect_timeout  of /_render      ('3s' / '2s')
#   error_page  statuses handed to the error location
#   error_target a URI location (default '/_influencers/error'); a named
#               one cannot serve a request whose request line was bad
#   workers     worker_processes                    (2)
#   load_module 0 to leave the module out
#   redis       influencers_redis arguments, right after influencers_zone
#               (fleet mode; none by default)
sub default_conf {
    my ($s, %o) = @_;

    my $zone      = $o{zone} // 'zone=jobs:1m';
    my $identity  = $o{identity}
                    // 'influencers_directory %%TESTDIR%%/directory.json;';
    my $match     = $o{match} // ENDPOINT_LOCATION;
    my $errpage   = $o{error_page}
                    // '400 404 405 413 414 494 500 501 502 503 504 505';
    my $etarget   = $o{error_target} // '/_influencers/error';
    my $eloc      = $etarget =~ /^@/ ? "location $etarget {\n            influencers_errors;\n        }"
                  : "location = $etarget {\n            internal;\n            influencers_errors;\n        }";
    my $workers   = $o{workers} // 2;
    my $rt        = $o{read_timeout} // '3s';
    my $ct        = $o{connect_timeout} // '2s';
    my $up        = $o{upstream} // '';
    my $main      = $o{main} // '';
    my $http      = $o{http} // '';
    my $server    = $o{server} // '';
    my $location  = $o{location} // '';
    my $render    = $o{render} // '';
    my $load      = (!defined $o{load_module} || $o{load_module})
                    ? 'load_module %%MODULE%%;' : '';
    my $redis     = defined $o{redis} ? "influencers_redis $o{redis};" : '';

    return <<"EOF";
$load
worker_processes $workers;
master_process on;
daemon off;
%%MAIN_GLOBALS%%
$main

events {
    worker_connections 256;
}

http {
    %%HTTP_GLOBALS%%
    $http

    influencers_zone $zone;
    $redis

    upstream render {
        server 127.0.0.1:%%BACKEND_PORT%% $up;
        keepalive 8;
    }

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        error_page $errpage $etarget;

        $eloc

        location $match {
            influencers zone=jobs;
            influencers_backend /_render;
            $identity
            $location
        }

        location = /_render {
            internal;
            proxy_pass http://render/jobs;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ignore_client_abort on;
            proxy_connect_timeout $ct;
            proxy_read_timeout $rt;
            $render
        }

        $server
    }
}
EOF
}

# Another server on the same zone and backend, for default_conf(http =>
# ...): the endpoint with errors as JSON, what most tests add to try a
# limit, a listen option or an identity of its own:
#   port        its port's name (%%PORT_<port>%%)
#   listen      more of the listen line (' http2', ' ssl http2')
#   top         server-level directives first
#   error_page  statuses handed to the error location ('' for none)
#               ('400 404 405 413 414 494 500 502 503 504')
#   error_target its URI ('/_influencers/error'); error_location: more
#               directives in it
#   match       the endpoint location's match        (ENDPOINT_LOCATION)
#   identity    ('influencers_directory %%TESTDIR%%/directory.json;')
#   location    more directives in the endpoint location
#   zone        the zone's name ('jobs')
#   render      the backend location's URI ('/_render2')
#   keepalive   0: the backend location only proxy_passes (no HTTP/1.1
#               keepalive connections to the backend)
#   render_extra more directives in the backend location
#   server      more server-level directives last
sub endpoint_server {
    my (%o) = @_;
    my $errpage  = $o{error_page} // '400 404 405 413 414 494 500 502 503 504';
    my $etarget  = $o{error_target} // '/_influencers/error';
    my $eloc     = $o{error_location} // '';
    my $errors   = length $errpage
        ? "error_page $errpage $etarget;\n        "
          . "location = $etarget { internal; $eloc influencers_errors; }"
        : '';
    my $match    = $o{match} // ENDPOINT_LOCATION;
    my $identity = $o{identity}
                   // 'influencers_directory %%TESTDIR%%/directory.json;';
    my $render   = $o{render} // '/_render2';
    my $zone     = $o{zone} // 'jobs';
    my $proxy    = (defined $o{keepalive} && !$o{keepalive}) ? ''
                 : "proxy_http_version 1.1;\n"
                   . '            proxy_set_header Connection "";';
    my $rextra   = $o{render_extra} // '';
    my $listen   = $o{listen} // '';
    my $top      = $o{top} // '';
    my $location = $o{location} // '';
    my $server   = $o{server} // '';
    return <<"EOF";
    server {
        listen 127.0.0.1:%%PORT_$o{port}%%$listen;
        $top
        $errors
        location $match {
            influencers zone=$zone;
            influencers_backend $render;
            $identity
            $location
        }
        location = $render {
            internal;
            proxy_pass http://render/jobs;
            $proxy
            $rextra
        }
        $server
    }
EOF
}

sub expand {
    my ($s, $text) = @_;
    $text =~ s/^[ \t]*load_module %%MODULE%%;[ \t]*\n//mg if module_static();
    $text =~ s/%%MODULE%%/$s->{module}/g;
    $text =~ s/%%TESTDIR%%/$s->{dir}/g;
    $text =~ s/%%HTTP_GLOBALS%%/$s->http_globals/ge;
    $text =~ s/%%MAIN_GLOBALS%%/$s->main_globals/ge;
    $text =~ s/%%PORT%%/$s->port('main')/ge;
    $text =~ s/%%BACKEND_PORT%%/$s->port('backend')/ge;
    $text =~ s/%%([A-Z]+)_PORT%%/$s->port(lc $1)/ge;
    $text =~ s/%%PORT_(\w+)%%/$s->port($1)/ge;
    return $text;
}

# conf($template): expands and writes nginx.conf; no argument: default_conf()
sub conf {
    my ($s, $template) = @_;
    $template = $s->default_conf unless defined $template;
    my $text = $s->expand($template);
    $s->write_file('nginx.conf', $text);
    $s->{conf_text} = $text;
    ($s->{workers}) = $text =~ /^\s*worker_processes\s+(\d+)\s*;/m;
    $s->{workers} ||= 1;
    return $text;
}

sub _nginx_env {
    my ($s) = @_;
    if ($ENV{INFLUENCERS_ASAN}) {
        $ENV{LD_PRELOAD} = _asan_lib();
        $ENV{ASAN_OPTIONS} = 'detect_leaks=0';
    }
}

# runs nginx -t on the current nginx.conf: (exit code, stderr text).
# -e stderr: until it has read the configuration, nginx logs to the error
# log it was built with, <prefix>/logs/error.log in an upstream build
# (Debian's is stderr), and the temporary prefix has no logs/.
sub test_config {
    my ($s) = @_;
    my $out = "$s->{dir}/test_config.stderr";
    unlink $out;
    my @cmd = (nginx_binary(), '-p', "$s->{dir}/", '-c', "$s->{dir}/nginx.conf",
               '-e', 'stderr', '-t');
    my $pid = spawn($out, sub { $s->_nginx_env }, @cmd);
    my $rc = _wait_pid($pid, 10);
    if (!defined $rc) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
        $rc = -1;
    }
    return ($rc, $s->read_file($out) // '');
}

sub _wait_pid {
    my ($pid, $timeout) = @_;
    my $end = Time::HiRes::time() + $timeout;
    while (Time::HiRes::time() < $end) {
        my $r = waitpid($pid, POSIX::WNOHANG());
        if ($r == $pid) {
            return $? & 127 ? 128 + ($? & 127) : $? >> 8;
        }
        return -2 if $r < 0;
        Time::HiRes::sleep(0.02);
    }
    return undef;
}

# a process running @cmd: its stdin /dev/null, its output appended to
# $log, $prep->() run in it first (the environment); its pid.  For nginx,
# the backends, redis-server (also t/lib/RedisTopo.pm, t/70's Prometheus)
sub spawn {
    my ($log, $prep, @cmd) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>>', $log;
        $prep->() if $prep;
        { no warnings q(exec); exec @cmd; }
        POSIX::_exit(127);
    }
    return $pid;
}

sub _port_open {
    my ($port) = @_;
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 1);
    return 0 unless $c;
    close $c;
    return 1;
}

# ---------------------------------------------------------------------------
# nginx processes

sub run {
    my ($s, %o) = @_;

    die "nginx already running" if $s->{nginx_pid};
    $s->conf unless -f "$s->{dir}/nginx.conf";

    my @cmd = (nginx_binary(), '-p', "$s->{dir}/", '-c', "$s->{dir}/nginx.conf",
               '-e', "$s->{dir}/error.log");

    my $pid = spawn("$s->{dir}/stderr.log", sub { $s->_nginx_env }, @cmd);
    $s->{nginx_pid} = $pid;
    $s->_watchdog;

    my $port = $o{port} // $s->{ports}{main};
    my $end = Time::HiRes::time() + ($o{timeout} || 5);
    my $ok = 0;
    while (Time::HiRes::time() < $end) {
        my $r = waitpid($pid, POSIX::WNOHANG());
        if ($r == $pid) {
            $s->{nginx_pid} = undef;
            last;
        }
        my @w = $s->worker_pids;
        if ((!defined $port || _port_open($port)) && @w >= $s->{workers})
        {
            $ok = 1;
            last;
        }
        Time::HiRes::sleep(0.05);
    }

    unless ($ok) {
        $s->stop;
        my @log = grep { !/\[debug\]/ }
                  split /\n/, ($s->read_file('stderr.log') // '')
                               . ($s->read_file('error.log') // '');
        splice @log, 0, @log - 30 if @log > 30;
        die "nginx did not start:\n" . join("\n", @log) . "\n";
    }
    return $s;
}

# a small process that stops nginx and the backends (by pid) if this test
# process dies without running its END block (SIGKILL)
sub _watchdog {
    my ($s) = @_;
    $s->_stop_watchdog;
    $s->_guard('watchdog', ['QUIT'], 0, $s->{nginx_pid},
               map { $_->{pid} } values %{ $s->{backends} });
}

sub _stop_watchdog {
    my ($s, $slot) = @_;
    my $pid = delete $s->{$slot // 'watchdog'} or return;
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

# the watchdogs: a process, kept in $s->{$slot}, that looks every 0.5 s
# whether the test process is still there.  Once it is gone (and, with
# $if_alive, the first pid is still there), the first of @pids gets
# @$first signals, the others TERM, whatever is left after 3 s KILL; then
# the test dir goes.  It ends by itself when the first pid has gone.
sub _guard {
    my ($s, $slot, $first, $if_alive, @pids) = @_;
    my $owner = $$;
    my $pid = fork;
    return unless defined $pid;
    if ($pid == 0) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP PIPE);
        open STDIN, '<', '/dev/null';
        while (1) {
            Time::HiRes::sleep(0.5);
            last if getppid() != $owner;
            last unless kill 0, $pids[0];
        }
        if (getppid() != $owner && (!$if_alive || kill 0, $pids[0])) {
            kill $_, $pids[0] for @$first;
            kill 'TERM', @pids[1 .. $#pids] if @pids > 1;
            my $end = Time::HiRes::time() + 3;
            Time::HiRes::sleep(0.1)
                while Time::HiRes::time() < $end && grep { kill 0, $_ } @pids;
            kill 'KILL', grep { kill 0, $_ } @pids;
            Time::HiRes::sleep(0.2);
            File::Path::remove_tree($s->{dir}) unless $ENV{INFLUENCERS_LEAVE};
        }
        POSIX::_exit(0);
    }
    $s->{$slot} = $pid;
}

sub nginx_pid { return $_[0]->{nginx_pid}; }

sub nginx_alive {
    my ($s) = @_;
    my $pid = $s->{nginx_pid} or return 0;
    return waitpid($pid, POSIX::WNOHANG()) == 0 ? 1 : 0;
}

sub _children {
    my ($ppid) = @_;
    my @kids;
    opendir my $dh, '/proc' or return ();
    for my $p (grep { /^\d+$/ } readdir $dh) {
        open my $fh, '<', "/proc/$p/stat" or next;
        my $stat = <$fh>;
        close $fh;
        next unless defined $stat && $stat =~ /^\d+ \(.*\) \S (\d+) /s;
        next unless $1 == $ppid;
        my $cmd = '';
        if (open my $ch, '<', "/proc/$p/cmdline") {
            local $/;
            $cmd = <$ch> // '';
            close $ch;
        }
        $cmd =~ s/\0+$//;
        $cmd =~ s/\0/ /g;
        push @kids, [$p, $cmd];
    }
    closedir $dh;
    return @kids;
}

# pids of the running (not shutting down) worker processes
sub worker_pids {
    my ($s) = @_;
    my $m = $s->{nginx_pid} or return ();
    my @w = sort { $a <=> $b }
            map { $_->[0] }
            grep { $_->[1] =~ /worker process$/ } _children($m);
    return @w;
}

# HUP, then wait until a new generation of workers is up: 1 on success,
# 0 when nginx refused the new configuration (an [emerg] appeared instead)
sub reload {
    my ($s, %o) = @_;
    my $m = $s->{nginx_pid} or die "nginx not running";
    $s->conf($o{conf}) if defined $o{conf};

    my %old = map { $_ => 1 } $s->worker_pids;
    my $off = -s "$s->{dir}/error.log" || 0;

    kill 'HUP', $m;

    my $end = Time::HiRes::time() + ($o{timeout} || 5);
    while (Time::HiRes::time() < $end) {
        my @new = grep { !$old{$_} } $s->worker_pids;
        if (@new >= $s->{workers}) {
            # let the old generation go (bounded: idle ones exit at once)
            my $end2 = Time::HiRes::time() + 3;
            while (Time::HiRes::time() < $end2) {
                my %alive = map { $_->[0] => 1 } _children($m);
                last unless grep { $alive{$_} } keys %old;
                Time::HiRes::sleep(0.05);
            }
            return 1;
        }
        my $log = $s->read_file('error.log') // '';
        if (length($log) > $off && substr($log, $off) =~ /\[emerg\]/) {
            return 0;
        }
        Time::HiRes::sleep(0.05);
    }
    return 0;
}

sub stop {
    my ($s) = @_;
    if (my $pid = $s->{nginx_pid}) {
        kill 'QUIT', $pid;
        my $rc = _wait_pid($pid, 5);
        if (!defined $rc) {
            kill 'TERM', $pid;
            $rc = _wait_pid($pid, 3);
        }
        if (!defined $rc) {
            kill 'KILL', $pid;
            waitpid $pid, 0;
        }
        $s->{nginx_pid} = undef;
    }
    $s->_stop_watchdog;
    return $s;
}

# ---------------------------------------------------------------------------
# Backends (t/lib/backend.pl)

sub backend_script {
    my $here = File::Basename::dirname(File::Spec->rel2abs(__FILE__));
    return "$here/backend.pl";
}

# start_backend(name => 'backend', control => {...}): uses port(name)
sub start_backend {
    my ($s, %o) = @_;
    my $name = $o{name} || 'backend';
    die "backend $name already running" if $s->{backends}{$name};

    my $port = $s->port($name);
    my $record = "$s->{dir}/$name.requests.jsonl";
    my $control = "$s->{dir}/$name.control.json";
    $s->write_file($control, json_encode($o{control} || {}));
    unless (-f $record) {
        $s->write_file($record, '');
    }

    my $pid = spawn("$s->{dir}/$name.log", undef,
                    $^X, backend_script(), '--port', $port,
                    '--record', $record, '--control', $control,
                    '--exit-with-parent');

    $s->{backends}{$name} = { pid => $pid, port => $port, record => $record,
                              control => $control };

    my $end = Time::HiRes::time() + 5;
    while (Time::HiRes::time() < $end) {
        return $s if _port_open($port);
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) {
            delete $s->{backends}{$name};
            die "backend $name exited: " . ($s->read_file("$name.log") // '');
        }
        Time::HiRes::sleep(0.05);
    }
    $s->stop_backend($name);
    die "backend $name did not start";
}

sub stop_backend {
    my ($s, $name) = @_;
    $name ||= 'backend';
    my $b = delete $s->{backends}{$name} or return;
    kill 'TERM', $b->{pid};
    my $rc = _wait_pid($b->{pid}, 3);
    if (!defined $rc) {
        kill 'KILL', $b->{pid};
        waitpid $b->{pid}, 0;
    }
    # leave the record/control files for the next start of that name
    $s->{stopped_backends}{$name} = $b;
    return;
}

sub _backend_files {
    my ($s, $name) = @_;
    $name ||= 'backend';
    # a peer node (peer()) uses its first node's backend stand-in
    return $s->{backend_of}->_backend_files($name)
        if $s->{backend_of} && !$s->{backends}{$name}
           && !$s->{stopped_backends}{$name};
    my $b = $s->{backends}{$name} || $s->{stopped_backends}{$name};
    return $b if $b;
    return { record => "$s->{dir}/$name.requests.jsonl",
             control => "$s->{dir}/$name.control.json" };
}

# set_backend(status => 500, delay => 2, body => '...', headers => {...},
#             close => 1, drop => 1, rules => [...], name => 'backend')
sub set_backend {
    my ($s, %c) = @_;
    my $name = delete $c{name};
    my $b = $s->_backend_files($name);
    $s->write_file($b->{control}, json_encode(\%c));
    return;
}

# the requests a backend received, oldest first; each one a hash with
# method, uri, version, headers ([name, value] pairs), body (bytes), time,
# and h: lowercased name -> [values]
sub backend_requests {
    my ($s, $name) = @_;
    my $b = $s->_backend_files($name);
    my $text = $s->read_file($b->{record}) // '';
    my @r;
    for my $line (split /\n/, $text) {
        next unless length $line;
        my $rec = json_decode($line) or next;
        my %h;
        push @{ $h{lc $_->[0]} }, $_->[1] for @{ $rec->{headers} };
        $rec->{h} = \%h;
        push @r, $rec;
    }
    return @r;
}

# waits (bounded) until the backend has recorded at least $n requests
sub wait_backend_requests {
    my ($s, $n, %o) = @_;
    my $end = Time::HiRes::time() + ($o{timeout} || 5);
    my @r;
    while (1) {
        @r = $s->backend_requests($o{name});
        last if @r >= $n || Time::HiRes::time() >= $end;
        Time::HiRes::sleep(0.05);
    }
    return @r;
}

# ---------------------------------------------------------------------------
# HTTP client on raw sockets

# request($method, $path, $headers, $body, %opts): the bytes of a request
#   $headers: arrayref of name => value pairs (order and duplicates kept)
#             or a hashref; a Host header is added unless given (or
#             no_host => 1), and Connection: close unless given (or
#             keepalive => 1).
#   $body:    bytes; Content-Length is added unless given, unless
#             no_content_length => 1 or chunked => 1
#   chunked => 1 | [chunk sizes]: sends the body with chunked encoding
#   pause => seconds: returns [head, first half of the body, second half]
#             so that raw() sends them apart (the body arrives late)
sub request {
    my ($s, $method, $path, $headers, $body, %o) = @_;

    my @h;
    if (ref $headers eq 'HASH') {
        @h = map { ($_ => $headers->{$_}) } sort keys %$headers;
    } elsif (ref $headers eq 'ARRAY') {
        @h = @$headers;
    }

    my %has;
    for (my $i = 0; $i < @h; $i += 2) {
        $has{lc $h[$i]} = 1;
    }

    my $req = "$method $path HTTP/1.1\r\n";
    $req .= "Host: localhost\r\n" unless $has{host} || $o{no_host};
    $req .= "Connection: close\r\n" unless $has{connection} || $o{keepalive};
    for (my $i = 0; $i < @h; $i += 2) {
        $req .= "$h[$i]: $h[$i + 1]\r\n";
    }

    my $payload = '';
    if ($o{chunked}) {
        $req .= "Transfer-Encoding: chunked\r\n" unless $has{'transfer-encoding'};
        my $b = $body // '';
        my @sizes = ref $o{chunked} ? @{ $o{chunked} } : ();
        while (length $b) {
            my $n = @sizes ? shift @sizes : 1000;
            my $chunk = substr($b, 0, $n, '');
            $payload .= sprintf("%x\r\n%s\r\n", length $chunk, $chunk);
        }
        $payload .= "0\r\n\r\n";
    } elsif (defined $body) {
        $req .= 'Content-Length: ' . length($body) . "\r\n"
            unless $has{'content-length'} || $o{no_content_length};
        $payload = $body;
    }
    $req .= "\r\n";

    if ($o{pause}) {
        my $half = int(length($payload) / 2);
        return [ $req, substr($payload, 0, $half), substr($payload, $half) ];
    }
    return $req . $payload;
}

# http($method, $path, $headers, $body, %opts): request() sent by raw()
sub http {
    my ($s, $method, $path, $headers, $body, %o) = @_;
    my $req = $s->request($method, $path, $headers, $body, %o);
    return $s->raw($req, %o, head => ($method eq 'HEAD'));
}

sub _connect {
    my ($s, %o) = @_;
    my $port = $o{port} // $s->port('main');
    my $timeout = $o{timeout} // $s->{timeout};
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                     Proto => 'tcp', Timeout => $timeout)
        or return undef;
    binmode $sock;
    $sock->blocking(0);
    return $sock;
}

# writes bytes (or pieces, pause seconds apart) until done, an early answer
# or the deadline
sub _send {
    my ($sock, $bytes, $end, $pause) = @_;
    my @pieces = ref $bytes ? @$bytes : ($bytes);
    my $sel = IO::Select->new($sock);
    for my $k (0 .. $#pieces) {
        my $piece = $pieces[$k];
        if ($k > 0) {
            Time::HiRes::sleep($pause // 0.2);
        }
        my $off = 0;
        while ($off < length $piece) {
            my $left = $end - Time::HiRes::time();
            return if $left <= 0;
            my ($r, $w) = IO::Select->select($sel, $sel, undef, $left);
            return if $r && @$r;   # an early answer: read it
            next unless $w && @$w;
            my $n = syswrite($sock, $piece, 65536, $off);
            if (!defined $n) {
                next if $!{EAGAIN} || $!{EINTR};
                return;
            }
            $off += $n;
        }
    }
}

# reads one response into $$buf (bounded); 1 if it timed out
sub _receive {
    my ($sock, $buf, $end, $head) = @_;
    my $sel = IO::Select->new($sock);
    while (1) {
        return 0 if _response_complete($$buf, $head);
        my $left = $end - Time::HiRes::time();
        return 1 if $left <= 0;
        my @r = $sel->can_read($left);
        next unless @r;
        my $n = sysread($sock, $$buf, 65536, length $$buf);
        if (!defined $n) {
            next if $!{EAGAIN} || $!{EINTR};
            return 0;
        }
        return 0 if $n == 0;
    }
}

# raw($bytes or [pieces], %opts): sends, reads one response (bounded),
# parses it.  Options: timeout (5), port, head (HEAD: no body), pause
# (seconds between pieces), close_after (seconds: send, wait, close, and
# return undef).
sub raw {
    my ($s, $bytes, %o) = @_;
    my $timeout = $o{timeout} // $s->{timeout};

    local $SIG{PIPE} = 'IGNORE';

    my $sock = $s->_connect(%o)
        or return InfTest::Response->failed("connect: $!");
    my $end = Time::HiRes::time() + $timeout;

    _send($sock, $bytes, $end, $o{pause});

    if (defined $o{close_after}) {
        Time::HiRes::sleep($o{close_after});
        close $sock;
        return undef;
    }

    my $buf = '';
    my $timed_out = _receive($sock, \$buf, $end, $o{head});
    close $sock;

    my $resp = InfTest::Response->parse($buf, $o{head});
    $resp->{timed_out} = $timed_out;
    return $resp;
}

# session(@requests): several requests, one after the other, on one
# keepalive connection; each request is [$method, $path, $headers, $body,
# %opts] (sent with keepalive => 1) or raw bytes.  Returns the responses;
# stops at the first that closes the connection or does not come.
sub session {
    my ($s, @reqs) = @_;
    my %o = ref $reqs[-1] eq 'HASH' ? %{ pop @reqs } : ();
    my $timeout = $o{timeout} // $s->{timeout};

    local $SIG{PIPE} = 'IGNORE';

    my $sock = $s->_connect(%o)
        or return (InfTest::Response->failed("connect: $!"));
    my @out;
    for my $q (@reqs) {
        my ($bytes, $head);
        if (ref $q eq 'ARRAY') {
            my ($m, $p, $h, $b, %ro) = @$q;
            $bytes = $s->request($m, $p, $h, $b, keepalive => 1, %ro);
            $head = $m eq 'HEAD';
        } else {
            $bytes = $q;
        }
        my $end = Time::HiRes::time() + $timeout;
        _send($sock, $bytes, $end, $o{pause});
        my $buf = '';
        my $timed_out = _receive($sock, \$buf, $end, $head);
        my $resp = InfTest::Response->parse($buf, $head);
        $resp->{timed_out} = $timed_out;
        push @out, $resp;
        last if $timed_out || !$resp->status
             || ($resp->header('connection') // '') =~ /close/i;
    }
    close $sock;
    return @out;
}

# has the buffer one whole response (skipping 1xx)?
sub _response_complete {
    my ($buf, $head) = @_;
    while (1) {
        my $i = index($buf, "\r\n\r\n");
        return 0 if $i < 0;
        my $hdr = substr($buf, 0, $i);
        my $rest = substr($buf, $i + 4);
        my ($status) = $hdr =~ m{^HTTP/\d\.\d (\d{3})};
        return 0 unless defined $status;
        if ($status =~ /^1/) {
            $buf = $rest;
            next;
        }
        return 1 if $head || $status == 204 || $status == 304;
        if ($hdr =~ /^transfer-encoding:\s*chunked/im) {
            return defined _dechunk($rest) ? 1 : 0;
        }
        if ($hdr =~ /^content-length:\s*(\d+)/im) {
            return length($rest) >= $1 ? 1 : 0;
        }
        return 0;   # until EOF
    }
}

sub _dechunk {
    my ($data) = @_;
    my $out = '';
    while (1) {
        return undef unless $data =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//;
        my $n = hex $1;
        if ($n == 0) {
            # trailers until an empty line
            return $data =~ /^(?:[^\r\n]+\r\n)*\r\n/ ? $out : undef;
        }
        return undef if length($data) < $n + 2;
        $out .= substr($data, 0, $n);
        substr($data, 0, $n + 2) = '';
    }
}

# POST /v1/projects/{project}/influencers with sensible defaults:
#   project (P_FEMALE), key (K_WRITE; undef: no Authorization),
#   auth (the raw Authorization value), body ('{}'; undef: none),
#   ctype ('application/json' when there is a body; undef: none),
#   headers (more pairs), method ('POST'), path (overrides project)
#   and any option of http()
sub create {
    my ($s, %o) = @_;
    return $s->http($s->create_args(%o));
}

# the arguments of http() that create() would use: for session()
sub create_args {
    my ($s, %o) = @_;
    my $project = exists $o{project} ? delete $o{project} : P_FEMALE;
    my $path = delete $o{path} // "/v1/projects/$project/influencers";
    my $method = delete $o{method} // 'POST';
    my $body = exists $o{body} ? delete $o{body} : '{}';

    my @h;
    if (exists $o{auth}) {
        my $a = delete $o{auth};
        push @h, Authorization => $a if defined $a;
        delete $o{key};
    } else {
        my $key = exists $o{key} ? delete $o{key} : K_WRITE;
        push @h, Authorization => "Bearer $key" if defined $key;
    }
    my $ctype = exists $o{ctype} ? delete $o{ctype}
              : (defined $body && length $body ? 'application/json' : undef);
    push @h, 'Content-Type' => $ctype if defined $ctype;
    push @h, @{ delete $o{headers} } if $o{headers};

    return ($method, $path, \@h, $body, %o);
}

# ---------------------------------------------------------------------------
# Idempotency helpers shared by t/3*.t

# create() with an Idempotency-Key (none if $key is undef) and more headers
sub idem {
    my ($s, $key, %o) = @_;
    my $h = delete $o{headers} || [];
    return $s->create(%o, headers => [
        (defined $key ? ('Idempotency-Key' => $key) : ()), @$h ]);
}

# how many requests the backend stand-in has received
sub forwards {
    my ($s) = @_;
    my @r = $s->backend_requests;
    return scalar @r;
}

# the jobs the backend received: jobId (the forward's Idempotency-Key) =>
# [its forwards, oldest first]; one key, one job means one jobId per key
# here, however often it was sent
sub backend_jobs {
    my ($s, $name) = @_;
    my %jobs;
    for my $r ($s->backend_requests($name)) {
        my $job = $r->{h}{'idempotency-key'}[0];
        push @{ $jobs{$job} }, $r if defined $job;
    }
    return \%jobs;
}

# the forwards of one job: all byte for byte the first one (headers and
# body), the backend told of each resend (its "dup" mark); a subtest.
# Returns how many there were.
sub check_job_forwards {
    my ($s, $job, $name, %o) = @_;
    my @f = @{ $s->backend_jobs($o{name})->{$job} || [] };
    Test::More::subtest($name => sub {
        Test::More::ok(@f >= 1, "job $job was forwarded") or return;
        my $first = $f[0];
        my $b = InfTest::json_decode($first->{body}) || {};
        Test::More::is($b->{jobId}, $job, 'the body names the job');
        Test::More::is($first->{h}{'x-request-id'}[0], $b->{requestId},
            "the forward's X-Request-Id is the job's requestId");
        for my $i (1 .. $#f) {
            Test::More::ok($f[$i]{body} eq $first->{body},
                "forward $i: the first forward's body, byte for byte")
                or Test::More::diag("first: $first->{body}\nnow:   $f[$i]{body}");
            Test::More::is($f[$i]{h}{'x-request-id'}[0],
                $first->{h}{'x-request-id'}[0], "forward $i: the same X-Request-Id");
            Test::More::ok($f[$i]{dup}, "forward $i: the backend saw the job again");
        }
        Test::More::is(scalar @f, $o{count}, "$o{count} forwards of the job")
            if defined $o{count};
    });
    return scalar @f;
}

# the counters of an influencers_stats location, decoded ({} if none);
# in list context the answer too
sub stats {
    my ($s, $path) = @_;
    my $r = $s->http('GET', $path // '/_stats', [], undef);
    my $json = $r->json || {};
    return wantarray ? ($json, $r) : $json;
}

# the bytes of idem($key, %o): for send_async() or a client of its own
sub idem_request {
    my ($s, $key, %o) = @_;
    my $h = delete $o{headers} || [];
    my ($m, $p, $hd, $b, %ro) = $s->create_args(%o, headers => [
        (defined $key ? ('Idempotency-Key' => $key) : ()), @$h ]);
    return $s->request($m, $p, $hd, $b, %ro);
}

# idem($key, %o) sent now, its answer read later with finish_async(): a
# request kept in flight while others are made.  o{port}: another server.
sub idem_async {
    my ($s, $key, %o) = @_;
    my $port = delete $o{port};
    return $s->send_async($s->idem_request($key, %o), $port);
}

# waits (bounded, $timeout 5 s) until $n workers run and none of %$old is
# among them; returns the new ones (fewer if they did not come)
sub new_workers {
    my ($s, $old, $n, $timeout) = @_;
    my $end = Time::HiRes::time() + ($timeout || 5);
    while (Time::HiRes::time() < $end) {
        my @w = grep { !$old->{$_} } $s->worker_pids;
        return @w if @w >= $n;
        Time::HiRes::sleep(0.05);
    }
    return grep { !$old->{$_} } $s->worker_pids;
}

# HUP, and wait (bounded) only for the new generation of workers, unlike
# reload(): the old one may still be finishing a request.  1 once it is up.
sub hup {
    my ($s) = @_;
    my %old = map { $_ => 1 } $s->worker_pids;
    kill 'HUP', $s->{nginx_pid} or return 0;
    return $s->new_workers(\%old, $s->{workers}) >= $s->{workers} ? 1 : 0;
}

# an IMF-fixdate (Idempotency-Expires) -> epoch seconds, undef if it is not
# one: "about ttl from now" is checked against the clock
my %MON = (Jan => 0, Feb => 1, Mar => 2, Apr => 3, May => 4, Jun => 5,
           Jul => 6, Aug => 7, Sep => 8, Oct => 9, Nov => 10, Dec => 11);

sub http_date {
    my ($d) = @_;
    return undef unless defined $d && $d =~
        /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) (\w{3}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT$/;
    return undef unless exists $MON{$2};
    return Time::Local::timegm($6, $5, $4, $1, $MON{$2}, $3);
}

# a request sent, its answer not read yet: for requests in flight
sub send_async {
    my ($s, $bytes, $port) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $port // $s->port, Proto => 'tcp', Timeout => 5)
        or die "connect: $!";
    binmode $sock;
    my $off = 0;
    while ($off < length $bytes) {
        my $n = syswrite($sock, $bytes, length($bytes) - $off, $off);
        die "write: $!" unless defined $n;
        $off += $n;
    }
    return $sock;
}

# the answer on a send_async() socket, read until the server closes or
# $timeout (10 s) passes; ->{timed_out} tells which
sub finish_async {
    my ($sock, $timeout) = @_;
    my $sel = IO::Select->new($sock);
    my $end = Time::HiRes::time() + ($timeout // 10);
    my ($buf, $timed_out) = ('', 1);
    while ((my $left = $end - Time::HiRes::time()) > 0) {
        next unless $sel->can_read($left);
        my $n = sysread($sock, $buf, 65536, length $buf);
        next if !defined $n && $!{EINTR};
        if (!$n) { $timed_out = 0; last; }
    }
    close $sock;
    my $r = InfTest::Response->parse($buf);
    $r->{timed_out} = $timed_out;
    return $r;
}

sub sleep_until {
    my ($when) = @_;
    my $d = $when - Time::HiRes::time();
    Time::HiRes::sleep($d) if $d > 0;
}

# ---------------------------------------------------------------------------
# Forked clients: one burst released together (t/31 on one node, t/41 on
# two), and the clients of the load generators (t/lib/FaultLoad.pm,
# t/lib/Drill.pm)

# waits for the processes of %$pids (by pid) until $end (epoch), looking
# every $nap seconds; one still there then is killed by pid.  Returns how
# many had to be killed.
sub reap {
    my ($pids, $end, $nap) = @_;
    my %left = map { $_ => 1 } keys %$pids;
    while (%left && Time::HiRes::time() < $end) {
        for my $p (keys %left) {
            delete $left{$p} if waitpid($p, POSIX::WNOHANG()) != 0;
        }
        Time::HiRes::sleep($nap) if %left;
    }
    for my $p (keys %left) {
        kill 'KILL', $p;
        waitpid $p, 0;
    }
    return scalar keys %left;
}

# $n forked clients, client $c running $code->($c) and leaving its text
# (or "ERROR ...") in the test dir's file "$stem-$c.txt", written whole
# (tmp, rename) before it leaves by POSIX::_exit, never running the
# harness's END blocks.  Returns {pid => file}.
sub fork_clients {
    my ($s, $stem, $n, $code) = @_;
    my %pids;
    for my $c (1 .. $n) {
        my $file = $s->path("$stem-$c.txt");
        unlink $file;
        my $pid = fork;
        die "fork: $!" unless defined $pid;
        if ($pid == 0) {
            $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
            $SIG{PIPE} = 'IGNORE';
            my $out = eval { $code->($c) } // "ERROR $@\n";
            if (open my $fh, '>', "$file.tmp") {
                print {$fh} $out;
                close $fh;
                rename "$file.tmp", $file;
            }
            POSIX::_exit(0);
        }
        $pids{$pid} = $file;
    }
    return \%pids;
}

# One burst: $n forked clients, client $i on port $o{ports}[$i % ports]
# (default: this node's port) and so on node ($i % ports) + 1, connect,
# wait at the gate (a pipe whose write end the parent closes), then send
# $bytes and read the answer; with $o{late}, one client in five sends
# that many seconds after the gate opened.  Returns the number of clients
# ready at the gate and the answers (InfTest::Response with ->{timed_out},
# ->{node} and ->{error} if the client failed).
sub burst {
    my ($s, $bytes, $n, %o) = @_;
    my @ports = @{ $o{ports} || [$s->port] };
    my $late = $o{late};

    pipe(my $ready_r, my $ready_w) or die "pipe: $!";
    pipe(my $gate_r, my $gate_w) or die "pipe: $!";
    pipe(my $res_r, my $res_w) or die "pipe: $!";

    my @kids;
    for my $i (1 .. $n) {
        my $node = $i % @ports;
        my $pid = fork;
        if (!defined $pid) {
            Test::More::diag("fork: $!");
            last;
        }
        if ($pid == 0) {
            close $ready_r; close $gate_w; close $res_r;
            my $line = eval {
                local $SIG{PIPE} = 'IGNORE';
                my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                    PeerPort => $ports[$node], Proto => 'tcp', Timeout => 5)
                    or die "connect: $!\n";
                binmode $sock;
                syswrite $ready_w, 'r';
                my $x;
                sysread $gate_r, $x, 1;         # EOF: go
                # some clients come late, after the first answer
                Time::HiRes::sleep($late) if $late && $i % 5 == 0;
                my $off = 0;
                while ($off < length $bytes) {
                    my $w = syswrite($sock, $bytes, length($bytes) - $off, $off);
                    die "write: $!\n" unless defined $w;
                    $off += $w;
                }
                # the parent parses the bytes read (within 10 s)
                my $r = finish_async($sock, 10);
                json_encode({ raw => $r->raw, timed_out => $r->{timed_out},
                              node => $node + 1 });
            } // json_encode({ raw => '', error => "$@", node => $node + 1 });
            # one line, one write (a pipe write under PIPE_BUF is atomic)
            syswrite $res_w, "$line\n";
            POSIX::_exit(0);
        }
        push @kids, $pid;
    }
    close $ready_w; close $gate_r; close $res_w;

    # everyone connected (bounded), then open the gate
    my $ready = 0;
    my $sel = IO::Select->new($ready_r);
    my $end = Time::HiRes::time() + 10;
    while ($ready < @kids && (my $left = $end - Time::HiRes::time()) > 0) {
        next unless $sel->can_read($left);
        my $got = sysread($ready_r, my $x, 1024);
        last unless $got;
        $ready += $got;
    }
    close $gate_w;

    # the answers (bounded)
    my $text = '';
    $sel = IO::Select->new($res_r);
    $end = Time::HiRes::time() + 15;
    while ((my $left = $end - Time::HiRes::time()) > 0) {
        next unless $sel->can_read($left);
        my $got = sysread($res_r, $text, 65536, length $text);
        next if !defined $got && $!{EINTR};
        last unless $got;
    }
    close $res_r; close $ready_r;

    # every client process is waited for, by pid (killed if it lingers)
    reap({ map { $_ => 1 } @kids }, Time::HiRes::time() + 5, 0.01);

    my @answers;
    for my $l (split /\n/, $text) {
        my $j = json_decode($l) or next;
        my $r = InfTest::Response->parse($j->{raw});
        $r->{timed_out} = $j->{timed_out};
        $r->{error} = $j->{error} if $j->{error};
        $r->{node} = $j->{node};
        push @answers, $r;
    }
    return ($ready, @answers);
}

# a few answers of a burst, for diagnostics
sub burst_sample {
    my @a = @_;
    return join "\n", map { "node $_->{node}: " . $_->summary }
                      @a[0 .. ($#a < 4 ? $#a : 4)];
}

# The checks of one burst of $o{clients} with a new key, sent when the
# backend had $n0 requests (t/31 on one node, t/41 with $o{nodes} 2): one
# original 202, every other answer a replay or a 409, one forward.  On
# two nodes also half the clients on each, no 5xx and one Location, and
# the forward is waited for ($o{wait} s).  Returns {original => [..],
# replays => [..], busy => [..]}.
sub check_burst {
    my ($s, $n0, $ready, $a, %o) = @_;
    my $n = $o{clients};
    my $fleet = ($o{nodes} // 1) > 1;
    my @a = @$a;
    Test::More::is($ready, $n, 'every client connected before the gate opened');
    Test::More::is(scalar @a, $n, 'every client got an answer');
    Test::More::is(scalar(grep { $_->{timed_out} || $_->{error} } @a), 0,
       'no request timed out or failed');
    Test::More::is(scalar(grep { $_->{node} == 1 } @a), $n / 2,
       'half of them on node 1') if $fleet;

    my @acc = grep { $_->status == 202 } @a;
    my @busy = grep { $_->status == 409 } @a;
    my @five = grep { $_->status >= 500 } @a;
    my @other = grep { $_->status != 202 && $_->status != 409 } @a;
    Test::More::is(scalar @five, 0, 'no 5xx')
        or Test::More::diag(burst_sample(@five)) if $fleet;
    Test::More::is(scalar @other, 0, 'every answer is a 202 or a 409')
        or Test::More::diag(burst_sample(@other));

    my @orig = grep { !defined $_->header('idempotent-replayed') } @acc;
    my @repl = grep { ($_->header('idempotent-replayed') // '') eq 'true' } @acc;
    Test::More::is(scalar @orig, 1, 'exactly one original 202'
                   . ($fleet ? ' in the fleet' : ''))
        or Test::More::diag(burst_sample(@orig));
    Test::More::is(scalar(@orig) + scalar(@repl), scalar @acc,
       'every other 202 is marked Idempotent-Replayed: true');

    my %bodies = map { $_->body => 1 } @acc;
    Test::More::is(scalar keys %bodies, 1, 'all 202 bodies are byte-identical'
                   . ($fleet ? ', whichever node' : ''));
    if ($fleet) {
        my %loc = map { ($_->header('location') // '') => 1 } @acc;
        Test::More::is(scalar keys %loc, 1, 'one Location');
    }
    my ($job) = @acc ? ($acc[0]->body =~ ACCEPT_RE) : ('');

    my @fw = $o{wait}
           ? $s->wait_backend_requests($n0 + 1, timeout => $o{wait})
           : $s->backend_requests;
    Test::More::is(scalar @fw - $n0, 1, 'exactly one forward reached the backend');
    Test::More::is($fw[-1]{h}{'idempotency-key'}[0], $job,
       'the forwarded job is the one answered') if @fw > $n0;

    my @bad409 = grep {
        my $j = $_->json;
        !(ref $j eq 'HASH' && ($j->{error}{code} // '') eq 'IDEMPOTENCY_IN_PROGRESS'
          && ($_->header('retry-after') // '') =~ /^\d+$/)
    } @busy;
    Test::More::is(scalar @bad409, 0,
       'every 409 is IDEMPOTENCY_IN_PROGRESS with Retry-After')
        or Test::More::diag(burst_sample(@bad409));

    my %rid = map { ($_->header('x-request-id') // '') => 1 } @a;
    Test::More::is(scalar keys %rid, scalar @a,
       'every answer has its own X-Request-Id');
    return { original => \@orig, replays => \@repl, busy => \@busy };
}

# ---------------------------------------------------------------------------
# Assertions on answers (each one a subtest named after the behaviour)

# check_error($r, $status, $code, $message or undef, $name, %o)
#   the status, Content-Type: application/json, X-Request-Id: req_<32 hex>,
#   {"error":{"code","message","requestId"[,"details"]}} with requestId equal
#   to the header; details absent unless o{details} (then is_deeply), and
#   o{allow_details} to leave it unchecked.
sub check_error {
    my ($r, $status, $code, $message, $name, %o) = @_;
    my $ok;
    Test::More::subtest($name => sub {
        Test::More::is($r->status, $status, "status $status")
            or Test::More::diag($r->summary);
        Test::More::like($r->header('content-type') // '',
            qr{^application/json(?:\s*;|$)}i, 'Content-Type application/json');
        my $rid = $r->header('x-request-id') // '';
        Test::More::like($rid, qr/^${\REQID_RE}$/, 'X-Request-Id req_<32 hex>');
        Test::More::is(scalar(my @x = $r->headers('x-request-id')), 1,
            'one X-Request-Id');
        my $j = $r->json;
        Test::More::ok(ref $j eq 'HASH' && ref $j->{error} eq 'HASH',
            'body is {"error":{...}}') or Test::More::diag($r->summary);
        $j = { error => {} } unless ref $j eq 'HASH' && ref $j->{error} eq 'HASH';
        my $e = $j->{error};
        Test::More::is(join(',', sort keys %$j), 'error', 'only "error" at the top');
        Test::More::is($e->{code}, $code, "code $code");
        if (defined $message) {
            Test::More::is($e->{message}, $message, "message '$message'");
        } else {
            Test::More::ok(defined $e->{message} && !ref $e->{message}
                && length $e->{message}, 'a message string');
        }
        Test::More::is($e->{requestId}, $rid, 'requestId equals X-Request-Id');
        if ($o{details}) {
            Test::More::is_deeply($e->{details}, $o{details}, 'details')
                or Test::More::diag($r->body);
        } elsif (!$o{allow_details}) {
            Test::More::ok(!exists $e->{details}, 'no details')
                or Test::More::diag($r->body);
        }
        my @extra = grep { !/^(?:code|message|requestId|details)$/ } keys %$e;
        Test::More::is("@extra", '', 'no other keys in "error"');
        Test::More::like($r->body,
            qr/^\{"error":\{"code":"[^"]*","message":"(?:[^"\\]|\\.)*","requestId":"req_[0-9a-f]{32}"(?:,"details":.*)?\}\}$/s,
            'error keys in the order code, message, requestId, details');
        $ok = $r->status == $status && ($e->{code} // '') eq $code;
    });
    return $ok;
}

# check_validation($r, $message, {formErrors => [...], fieldErrors => {...}}, $name)
sub check_validation {
    my ($r, $message, $details, $name, %o) = @_;
    $details = { formErrors => [], fieldErrors => {}, %$details };
    return check_error($r, 422, 'VALIDATION', $message, $name,
                       details => $details, %o);
}

# check_accepted($r, $name, retry_after => 5): the 202 envelope, byte-exact;
# returns the decoded body (or undef)
sub check_accepted {
    my ($r, $name, %o) = @_;
    my $ra = exists $o{retry_after} ? $o{retry_after} : 5;
    my $j;
    Test::More::subtest($name => sub {
        Test::More::is($r->status, 202, 'status 202') or Test::More::diag($r->summary);
        Test::More::like($r->header('content-type') // '',
            qr{^application/json(?:\s*;|$)}i, 'Content-Type application/json');
        Test::More::like($r->header('x-request-id') // '', qr/^${\REQID_RE}$/,
            'X-Request-Id req_<32 hex>');
        Test::More::like($r->body, ACCEPT_RE, 'body is the job envelope, byte-exact')
            or Test::More::diag($r->body);
        $j = $r->json;
        my $job = ref $j eq 'HASH' ? $j->{jobId} // '' : '';
        Test::More::is($r->header('location'), "/v1/jobs/$job",
            'Location is the locationUrl');
        Test::More::is(scalar(my @l = $r->headers('location')), 1, 'one Location');
        Test::More::is($r->header('retry-after'), $ra, "Retry-After: $ra")
            if defined $ra;
    });
    return ref $j eq 'HASH' && $r->status == 202 ? $j : undef;
}

# check_new_job($r, $name, %o): a first answer, check_accepted($r, $name,
# %o) and not marked as a replay; returns the decoded body ({} if none)
sub check_new_job {
    my ($r, $name, %o) = @_;
    my $j = check_accepted($r, $name, %o);
    Test::More::ok(!defined $r->header('idempotent-replayed'),
        "$name: not a replay") or Test::More::diag($r->raw);
    return $j || {};
}

# check_resent($r, $job, $name): the answer to a retry that sent the key's
# job again (its first forward's outcome unknown) and got it accepted: the
# job's envelope, marked as a replay; returns the decoded body ({} if none)
sub check_resent {
    my ($r, $job, $name, %o) = @_;
    my $j = check_accepted($r, $name, %o) || {};
    Test::More::is($j->{jobId}, $job, "$name: the key's first job")
        or Test::More::diag($r->summary) if defined $job;
    Test::More::is($r->header('idempotent-replayed'), 'true',
        "$name: Idempotent-Replayed: true") or Test::More::diag($r->raw);
    return $j;
}

# check_replay($r, $first, $name, status => 202): the replay of $first, one
# subtest: same status (or o{status}) and body byte for byte, the marker
# once, same Location, Retry-After and Idempotency-Expires, and a request
# id of its own
sub check_replay {
    my ($r, $first, $name, %o) = @_;
    Test::More::subtest($name => sub {
        if (defined $o{status}) {
            Test::More::is($r->status, $o{status}, "status $o{status}")
                or Test::More::diag($r->summary);
        } else {
            Test::More::is($r->status, $first->status,
                'same status ' . $first->status) or Test::More::diag($r->summary);
        }
        Test::More::ok($r->body eq $first->body, 'byte-identical body')
            or Test::More::diag("first:  " . $first->body . "\nreplay: " . $r->body);
        Test::More::is($r->header('idempotent-replayed'), 'true',
            'Idempotent-Replayed: true');
        Test::More::is(scalar(my @x = $r->headers('idempotent-replayed')), 1,
            'one Idempotent-Replayed');
        Test::More::is($r->header('location'), $first->header('location'),
            'same Location');
        Test::More::is($r->header('retry-after'), $first->header('retry-after'),
            'same Retry-After');
        Test::More::is($r->header('idempotency-expires'),
            $first->header('idempotency-expires'), 'same Idempotency-Expires');
        Test::More::like($r->header('content-type') // '', qr{^application/json}i,
            'Content-Type application/json');
        Test::More::like($r->header('x-request-id') // '', qr/^${\REQID_RE}$/,
            'X-Request-Id req_<32 hex>');
        Test::More::isnt($r->header('x-request-id') // '',
            $first->header('x-request-id') // '', 'a request id of its own');
    });
}

# the body of an error with its requestId blanked (to compare two answers)
sub without_request_id {
    my ($body) = @_;
    (my $b = $body // '') =~ s/"requestId":"req_[0-9a-f]{32}"/"requestId":"req_"/g;
    return $b;
}

# ---------------------------------------------------------------------------
# Logs

sub error_log { my ($s) = @_; return $s->read_file('error.log') // ''; }

# the lines of error.log matching $re
sub log_lines {
    my ($s, $re) = @_;
    return grep { /$re/ } split /\n/, $s->error_log;
}

# how many lines of error.log match $re, in any context (is() gives its
# arguments list context): to compare before and after a step
sub count_log {
    my ($s, $re) = @_;
    return scalar(my @l = $s->log_lines($re));
}

# stops nginx (so that the logs are complete) and checks error.log and
# nginx's stderr: no [alert], no [emerg] (unless allow_emerg => 1), no
# Sanitizer reports.  Three Test::More assertions.
sub check_log_clean {
    my ($s, %o) = @_;
    $s->stop unless $o{keep_running};
    my $log = $s->error_log . ($s->read_file('stderr.log') // '');

    my @alert = grep { /\[alert\]/ && !($o{allow} && /$o{allow}/) } split /\n/, $log;
    my @emerg = grep { /\[emerg\]/ } split /\n/, $log;
    my @asan  = grep { /Sanitizer|==\d+==ERROR/ } split /\n/, $log;

    Test::More::is(scalar @alert, 0, 'error.log has no [alert] lines')
        or Test::More::diag(join "\n", @alert[0 .. ($#alert < 9 ? $#alert : 9)]);
    if ($o{allow_emerg}) {
        Test::More::pass('error.log [emerg] lines expected by this test');
    } else {
        Test::More::is(scalar @emerg, 0, 'error.log has no [emerg] lines')
            or Test::More::diag(join "\n", @emerg);
    }
    Test::More::is(scalar @asan, 0, 'no Sanitizer reports')
        or Test::More::diag(join "\n", @asan[0 .. ($#asan < 19 ? $#asan : 19)]);
}

# ---------------------------------------------------------------------------
# Shared memory (for "an API key never appears in the zone")

# the contents of the shared anonymous mappings of a process (as root)
sub shared_memory_of {
    my ($s, $pid) = @_;
    no warnings 'portable';
    open my $maps, '<', "/proc/$pid/maps" or return undef;
    my @ranges;
    while (my $l = <$maps>) {
        next unless $l =~ /^([0-9a-f]+)-([0-9a-f]+) r..s \S+ \S+ \d+\s*(.*)$/;
        push @ranges, [hex $1, hex $2];
    }
    close $maps;
    open my $mem, '<:raw', "/proc/$pid/mem" or return undef;
    my $all = '';
    for my $r (@ranges) {
        my $len = $r->[1] - $r->[0];
        next if $len > 64 * 1024 * 1024;
        sysseek($mem, $r->[0], 0) or next;
        my $buf = '';
        my $got = 0;
        while ($got < $len) {
            my $n = sysread($mem, $buf, $len - $got, $got);
            last unless $n;
            $got += $n;
        }
        $all .= $buf;
    }
    close $mem;
    return $all;
}

# ---------------------------------------------------------------------------
# Fleet mode (t/4*.t): a Redis server, and more gateway nodes
#
#   plan skip_all => InfTest::redis_missing() if InfTest::redis_missing();
#   my $t = InfTest->new;  $t->write_directory;
#   $t->start_redis(requirepass => 'pw', unixsocket => 1);   # port('redis')
#   $t->start_backend;
#   my $t2 = $t->peer;     # a second node: its own prefix and port, the
#                          # same backend stand-in and the same Redis
#   $_->conf($_->default_conf(redis => 'zone=jobs 127.0.0.1:%%REDIS_PORT%%'))
#       for $t, $t2;       # influencers_redis, right after influencers_zone
#   $t->redis('GET', $k), redis_info('clients'), redis_commandstats(),
#   redis_calls('evalsha', 'eval'), redis_clients(), redis_keys('pfx:*'),
#   stop_redis(), restart_redis(), freeze_redis() (SIGSTOP), thaw_redis()
#   (SIGCONT), redis_pid(); kill9() (SIGKILL of a node's master and
#   workers at once).
# redis-server runs by PID, without persistence, on loopback (and a unix
# socket in the test dir if asked); it is stopped by PID at cleanup, and by
# a watchdog of its own if the test process dies.

sub redis_server { return $ENV{INFLUENCERS_REDIS_SERVER} || '/usr/bin/redis-server'; }

# undef when redis-server is there, else why the fleet tests skip
sub redis_missing {
    my $b = redis_server();
    return -x $b ? undef
                 : "no $b (apt-get install redis-server): fleet mode is not tested";
}

# the node that owns the Redis server (a peer's is its first node's)
sub _redis_owner { my ($s) = @_; return $s->{redis_of} || $s; }

# peer(%new_options): another gateway node in this test: a new instance
# (temp dir, main port, nginx) whose %%BACKEND_PORT%% and %%REDIS_PORT%% are
# this one's, and whose backend_requests()/set_backend()/forwards() read and
# write this one's backend stand-in (so forwards are counted in one place).
# Other ports of this node are shared with share_ports => [names].
sub peer {
    my ($s, %o) = @_;
    my $share = delete $o{share_ports} || [];
    my $p = (ref $s)->new(log_level => $s->{log_level}, %o);
    $p->{used_ports} = $s->{used_ports};    # no port given out twice
    $p->{ports}{$_} = $s->port($_) for 'backend', 'redis', @$share;
    $p->{backend_of} = $s;
    $p->{redis_of} = $s;
    Scalar::Util::weaken($p->{backend_of});
    Scalar::Util::weaken($p->{redis_of});
    $p->{peer_name} = $o{name} if defined $o{name};
    return $p;
}

# start_redis(requirepass => 'secret', unixsocket => 1, args => [...],
#             timeout => 5): redis-server on 127.0.0.1:port('redis')
# (--save "", AOF with appendfsync everysec and maxmemory-policy noeviction,
# as fleet mode needs; persistence => 0: no AOF), and at redis_socket()
# with unixsocket.
# Remembered, so that restart_redis() starts the same server again.
sub start_redis {
    my ($s, %o) = @_;
    $s = $s->_redis_owner;
    die "redis already running" if $s->{redis} && $s->{redis}{pid};
    %o = %{ $s->{redis_opts} } if !%o && $s->{redis_opts};
    $s->{redis_opts} = { %o };

    my $port = $s->port('redis');
    my $rdir = "$s->{dir}/redis-data";
    File::Path::make_path($rdir);
    # as the README says fleet mode needs it: AOF, no eviction; unless the
    # test wants a Redis that loses what it acknowledged (persistence => 0)
    my @keep = ($o{persistence} // 1)
        ? ('--appendonly', 'yes', '--appendfsync', 'everysec',
           '--maxmemory-policy', 'noeviction')
        : ('--appendonly', 'no');
    my @cmd = (redis_server(),
        '--port', $port, '--bind', '127.0.0.1', '--save', '', @keep,
        '--dir', $rdir, '--daemonize', 'no',
        '--logfile', "$s->{dir}/redis.log", '--loglevel', 'notice',
        '--databases', '16');
    push @cmd, '--requirepass', $o{requirepass} if defined $o{requirepass};
    if ($o{unixsocket}) {
        push @cmd, '--unixsocket', $s->redis_socket, '--unixsocketperm', '777';
    }
    push @cmd, @{ $o{args} || [] };

    $s->_redis_close;
    my $pid = spawn("$s->{dir}/redis.stdout", undef, @cmd);
    $s->{redis} = { pid => $pid, port => $port, password => $o{requirepass} };
    $s->_redis_watchdog;

    my $end = Time::HiRes::time() + ($o{timeout} || 5);
    while (Time::HiRes::time() < $end) {
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) {
            $s->{redis}{pid} = undef;
            die "redis-server exited: " . ($s->read_file('redis.log') // '')
                . ($s->read_file('redis.stdout') // '');
        }
        my $r = $s->redis('PING', { timeout => 0.5 });
        return $s if defined $r && !ref $r && $r eq 'PONG';
        Time::HiRes::sleep(0.05);
    }
    $s->stop_redis;
    die "redis-server did not answer PING within 5 s";
}

sub redis_port   { my ($s) = @_; return $s->_redis_owner->port('redis'); }
sub redis_socket { my ($s) = @_; return $s->_redis_owner->{dir} . '/redis.sock'; }
sub redis_pid    { my ($s) = @_; my $r = $s->_redis_owner->{redis}; return $r ? $r->{pid} : undef; }

# stops redis-server by PID (SIGCONT first if frozen, SIGTERM, then SIGKILL)
sub stop_redis {
    my ($s) = @_;
    $s = $s->_redis_owner;
    $s->_redis_close;
    my $r = $s->{redis} or return $s;
    if (my $pid = $r->{pid}) {
        kill 'CONT', $pid;
        kill 'TERM', $pid;
        my $rc = _wait_pid($pid, 5);
        if (!defined $rc) {
            kill 'KILL', $pid;
            waitpid $pid, 0;
        }
        $r->{pid} = undef;
    }
    $r->{frozen} = 0;
    $s->_stop_watchdog('redis_watchdog');
    return $s;
}

# the same server again, on the same port (its data is gone: no persistence)
sub restart_redis {
    my ($s, %o) = @_;
    $s = $s->_redis_owner;
    $s->stop_redis;
    return $s->start_redis(%o);
}

# SIGSTOP / SIGCONT: a Redis that accepts connections and never answers
sub freeze_redis {
    my ($s) = @_;
    $s = $s->_redis_owner;
    my $pid = $s->redis_pid or die "redis not running";
    $s->_redis_close;
    kill 'STOP', $pid;
    $s->{redis}{frozen} = 1;
    return $s;
}

sub thaw_redis {
    my ($s) = @_;
    $s = $s->_redis_owner;
    my $pid = $s->redis_pid or die "redis not running";
    kill 'CONT', $pid;
    $s->{redis}{frozen} = 0;
    return $s;
}

# a process that stops redis-server (by PID) if the test process dies
# without its END block
sub _redis_watchdog {
    my ($s) = @_;
    $s->_stop_watchdog('redis_watchdog');
    $s->_guard('redis_watchdog', ['CONT', 'TERM'], 1, $s->{redis}{pid});
}

sub _redis_close {
    my ($s) = @_;
    if (my $c = delete $s->{redis_sock}) {
        close $c;
    }
}

# RESP: one command as an array of bulk strings
sub _resp_command {
    my @a = @_;
    my $out = '*' . scalar(@a) . "\r\n";
    for my $x (@a) {
        $x = '' unless defined $x;
        $out .= '$' . length($x) . "\r\n$x\r\n";
    }
    return $out;
}

# parses one reply from $$buf at $$pos: the value, or dies "incomplete".
# Strings and integers are scalars, a nil is undef, an array an array
# reference, an error { error => 'ERR ...' }.
sub _resp_parse {
    my ($buf, $pos) = @_;
    my $eol = index($$buf, "\r\n", $$pos);
    die "incomplete\n" if $eol < 0;
    my $type = substr($$buf, $$pos, 1);
    my $line = substr($$buf, $$pos + 1, $eol - $$pos - 1);
    my $next = $eol + 2;
    if ($type eq '+' || $type eq ':') {
        $$pos = $next;
        return $line;
    }
    if ($type eq '-') {
        $$pos = $next;
        return { error => $line };
    }
    if ($type eq '$') {
        if ($line < 0) { $$pos = $next; return undef; }
        die "incomplete\n" if length($$buf) < $next + $line + 2;
        $$pos = $next + $line + 2;
        return substr($$buf, $next, $line);
    }
    if ($type eq '*') {
        if ($line < 0) { $$pos = $next; return undef; }
        $$pos = $next;
        my @a;
        push @a, _resp_parse($buf, $pos) for 1 .. $line;
        return \@a;
    }
    die "bad RESP type '$type'\n";
}

# the harness's own connection (one, kept: so that INFO clients and
# commandstats see a constant client of ours), AUTHed when the server has
# a requirepass
sub _redis_conn {
    my ($s, $timeout) = @_;
    return $s->{redis_sock} if $s->{redis_sock};
    my $port = $s->port('redis');
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => $timeout)
        or do { $s->{redis_err} = "connect: $!"; return undef; };
    binmode $c;
    $s->{redis_sock} = $c;
    my $pw = $s->{redis} ? $s->{redis}{password} : undef;
    if (defined $pw) {
        my $r = $s->_redis_exchange(['AUTH', $pw], $timeout);
        if (ref $r eq 'HASH') {
            $s->{redis_err} = "AUTH: $r->{error}";
            $s->_redis_close;
            return undef;
        }
    }
    return $c;
}

sub _redis_exchange {
    my ($s, $cmd, $timeout) = @_;
    my $c = $s->{redis_sock} or return { error => 'harness: not connected' };
    local $SIG{PIPE} = 'IGNORE';
    my $bytes = _resp_command(@$cmd);
    my $end = Time::HiRes::time() + $timeout;
    my $off = 0;
    while ($off < length $bytes) {
        my $n = syswrite($c, $bytes, length($bytes) - $off, $off);
        if (!defined $n) {
            next if $!{EINTR} || $!{EAGAIN};
            $s->_redis_close;
            return { error => "harness: write: $!" };
        }
        $off += $n;
    }
    my $sel = IO::Select->new($c);
    my $buf = '';
    while (1) {
        my $pos = 0;
        my $v = eval { _resp_parse(\$buf, \$pos) };
        return $v unless $@;
        if ($@ ne "incomplete\n") {
            $s->_redis_close;
            return { error => "harness: $@" };
        }
        my $left = $end - Time::HiRes::time();
        if ($left <= 0 || !$sel->can_read($left)) {
            next if $left > 0;
            # a late reply would answer the next command: drop the connection
            $s->_redis_close;
            return { error => 'harness: timed out' };
        }
        my $n = sysread($c, $buf, 65536, length $buf);
        if (!$n) {
            next if !defined $n && ($!{EINTR} || $!{EAGAIN});
            $s->_redis_close;
            return { error => 'harness: connection closed' };
        }
    }
}

# redis(@command [, {timeout => 2}]): one command on the harness's own
# connection; the reply as _resp_parse() gives it.  A failure to connect or
# a timeout is { error => 'harness: ...' } (and the connection is dropped).
sub redis {
    my ($s, @cmd) = @_;
    my $o = ref $cmd[-1] eq 'HASH' ? pop @cmd : {};
    $s = $s->_redis_owner;
    my $timeout = $o->{timeout} // 2;
    for my $try (1, 2) {
        my $c = $s->_redis_conn($timeout)
            or return { error => "harness: $s->{redis_err}" };
        my $r = $s->_redis_exchange(\@cmd, $timeout);
        # a connection the server closed (restarted): once more, anew
        next if $try == 1 && ref $r eq 'HASH'
                && $r->{error} =~ /^harness: (?:connection closed|write)/;
        return $r;
    }
}

# is this reply an error (and which)?
sub redis_error {
    my ($r) = @_;
    return ref $r eq 'HASH' ? $r->{error} : undef;
}

# INFO <section> as a hash (field => value)
sub redis_info {
    my ($s, $section) = @_;
    my $r = $s->redis('INFO', $section // 'default');
    return {} if ref $r;
    my %h;
    for my $l (split /\r?\n/, $r) {
        next if $l =~ /^#/ || $l !~ /:/;
        my ($k, $v) = split /:/, $l, 2;
        $h{$k} = $v;
    }
    return \%h;
}

# INFO commandstats: { evalsha => { calls => N, usec => N, rejected_calls
# => N, failed_calls => N, ... }, 'client|list' => {...}, ... }
sub redis_commandstats {
    my ($s) = @_;
    my $i = $s->redis_info('commandstats');
    my %c;
    for my $k (keys %$i) {
        next unless $k =~ /^cmdstat_(.+)$/;
        my $name = $1;
        my %f = map { split /=/, $_, 2 } split /,/, $i->{$k};
        $c{$name} = \%f;
    }
    return \%c;
}

# the calls of these commands (names as in commandstats) added up
sub redis_calls {
    my ($s, @names) = @_;
    my $c = ref $names[0] eq 'HASH' ? shift @names : $s->redis_commandstats;
    my $n = 0;
    $n += ($c->{$_} ? $c->{$_}{calls} : 0) for @names;
    return $n;
}

# the commandstats calls of every command but the harness's own (info,
# client, ping, select, scan, ...): {name => calls}, to compare before/after
sub redis_foreign_calls {
    my ($s) = @_;
    my $c = $s->redis_commandstats;
    my %own = map { $_ => 1 } qw(info ping select scan dbsize keys type
        pttl ttl memory|usage client|list client|id config|get object|encoding
        strlen acl|setuser acl|deluser acl|list acl|whoami dump);
    return { map { $_ => $c->{$_}{calls} } grep { !$own{$_} } keys %$c };
}

# CLIENT LIST, less the harness's own connection: [{id, addr, cmd, db,
# user, name, ...}]
sub redis_clients {
    my ($s) = @_;
    my $me = $s->redis('CLIENT', 'ID');
    my $l = $s->redis('CLIENT', 'LIST');
    return [] if ref $l || ref $me;
    my @c;
    for my $line (split /\n/, $l) {
        my %f = map { split /=/, $_, 2 } grep { /=/ } split / /, $line;
        next if defined $f{id} && $f{id} eq $me;
        push @c, \%f;
    }
    return \@c;
}

# the keys matching $pattern in database $db (0), by SCAN, sorted
sub redis_keys {
    my ($s, $pattern, $db) = @_;
    $s->redis('SELECT', $db) if $db;
    my ($cursor, %k) = (0);
    my $guard = 0;
    do {
        my $r = $s->redis('SCAN', $cursor, 'MATCH', $pattern // '*',
                          'COUNT', 1000);
        last if ref $r ne 'ARRAY';
        $cursor = $r->[0];
        $k{$_} = 1 for @{ $r->[1] };
    } while ($cursor ne '0' && ++$guard < 10000);
    $s->redis('SELECT', 0) if $db;
    return sort keys %k;
}

# InfTest->fleet(%o): the usual fleet start, a list of nodes:
#   nodes     how many gateway nodes (2), each a master and `workers`
#   redis     influencers_redis arguments after zone=jobs and the address
#             (e.g. 'timeout=200ms on_error=local'); address
#             ('127.0.0.1:%%REDIS_PORT%%') to change that
#   redis_server  start_redis() options (requirepass, unixsocket, args)
#   control   the backend stand-in's control
#   log_level, and any default_conf() option (zone, location, server...;
#   server defaults to STATS_LOCATION)
# The first node owns Redis and the backend; the others are its peer()s.
sub fleet {
    my ($class, %o) = @_;
    my $n = delete $o{nodes} || 2;
    my $ll = delete $o{log_level};
    my $rs = delete $o{redis_server} || {};
    my $control = delete $o{control};
    my $address = delete $o{address} // '127.0.0.1:%%REDIS_PORT%%';
    my $args = delete $o{redis} // '';
    my $t = $class->new(log_level => $ll);
    $t->start_redis(%$rs);
    $t->start_backend(control => $control);
    my @nodes = ($t, map { $t->peer } 2 .. $n);
    for my $node (@nodes) {
        $node->write_directory;
        $node->conf($node->default_conf(
            server => STATS_LOCATION,
            %o,
            redis => "zone=jobs $address $args"));
        $node->run;
    }
    return @nodes;
}

# After Redis came back: every worker's link is back too.  A worker that
# got no request since is still in its backoff, and its timer reconnects
# it within the ceiling (1 s); the delays are jittered, so two workers come
# back apart, and one answering says nothing of the other.
sub wait_backoff_over { Time::HiRes::sleep(1.1); }

# SIGKILL of this node's master and workers at once (a crashed node, a
# power cut, the OOM killer); 1 when they are all gone (bounded wait)
sub kill9 {
    my ($s) = @_;
    my $m = $s->{nginx_pid} or return 0;
    my @w = $s->worker_pids;
    kill 'KILL', $m, @w;
    waitpid $m, 0;
    my $end = Time::HiRes::time() + 5;
    Time::HiRes::sleep(0.05)
        while Time::HiRes::time() < $end && grep { kill 0, $_ } @w;
    $s->{nginx_pid} = undef;
    $s->_stop_watchdog;
    return !grep { kill 0, $_ } @w;
}


# ---------------------------------------------------------------------------
# Cleanup

sub cleanup {
    my ($s) = @_;
    return unless $s->{owner} == $$;
    return if $s->{cleaned}++;
    local $SIG{PIPE} = 'IGNORE';
    $s->stop;
    $s->stop_backend($_) for keys %{ $s->{backends} };
    $s->stop_redis if $s->{redis};
    $s->_keep_logs if $ENV{INFLUENCERS_KEEP_LOGS};
    if ($ENV{INFLUENCERS_LEAVE}) {
        Test::More::diag("INFLUENCERS_LEAVE: test dir kept at $s->{dir}");
    } else {
        File::Path::remove_tree($s->{dir});
    }
}

# INFLUENCERS_KEEP_LOGS=/dir: the test dir's logs (*.log, *.jsonl,
# *.stderr, *.stdout) and state files (*.state, *.journal.*) copied to
# /dir/<test name>/<temp dir name>/, subdirectories kept
sub _keep_logs {
    my ($s) = @_;
    require File::Find;
    require File::Copy;
    my $test = File::Basename::basename($0);
    $test =~ s/\.t$//;
    my $to = "$ENV{INFLUENCERS_KEEP_LOGS}/$test/"
           . File::Basename::basename($s->{dir});
    File::Find::find({ no_chdir => 1, wanted => sub {
        my $f = $File::Find::name;
        return unless -f $f && !-l $f;
        my $base = File::Basename::basename($f);
        return unless $base =~ /\.(?:log|jsonl|stderr|stdout|state)$|\.journal\./;
        (my $rel = $f) =~ s{^\Q$s->{dir}\E/?}{};
        my $dest = "$to/$rel";
        File::Path::make_path(File::Basename::dirname($dest));
        File::Copy::copy($f, $dest);
    } }, $s->{dir});
}

sub DESTROY {
    my ($s) = @_;
    local ($?, $!, $@);
    $s->cleanup;
}

END {
    local ($?, $!, $@);
    for my $s (@INSTANCES) {
        $s->cleanup if $s;
    }
    unlink map { $_->[0] } grep { $_->[1] == $$ } @PORT_CLAIMS;
    _sweep_port_claims();
    rmdir $PORT_DIR;    # the last one out removes the directory
}

# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# State files made by hand (layout version 4): one journal or snapshot
# record of an entry, and a snapshot of records.  The zone keeps the
# digests' first 16 bytes.

# the zone's hash of an org's name (FNV-1a, 64 bits), as 8 bytes the way
# a record holds it (little-endian)
sub org_hash_bytes {
    my ($org) = @_;
    my ($hi, $lo) = (0xcbf29ce4, 0x84222325);
    for my $c (unpack 'C*', $org) {
        $lo ^= $c;
        # times 0x100000001b3, modulo 2^64, in 32-bit halves
        my $ll = $lo * 0x1b3;
        my $carry = int($ll / 4294967296);
        $hi = ($carry + $hi * 0x1b3 + $lo * 0x100) % 4294967296;
        $lo = $ll % 4294967296;
    }
    return pack('VV', $lo, $hi);
}

# one record of the state file or journal (layout 5): the entry's state is
# 1 accepted, 2 in doubt (the key keeps its job), 3 released
sub state_record {
    my (%e) = @_;
    my $entry = substr($e{key}, 0, 16) . substr($e{fingerprint}, 0, 16)
              . $e{job_id} . $e{inf_id} . ($e{request_id} // ("\0" x 16))
              . pack('Q<', $e{expires})
              . (defined $e{org} ? org_hash_bytes($e{org}) : pack('Q<', $e{org_hash} // 0))
              . pack('V', $e{retry_after} // 5)
              . pack('CCCC', $e{state} // 1, $e{gender} // 2, $e{age_range} // 2, 0);
    die 'entry size' unless length($entry) == 104;
    return pack('VV', 0x4a464e49, Compress::Zlib::crc32($entry)) . $entry;
}

sub state_snapshot {
    my (@records) = @_;
    return pack('V4', 0x53464e49, 5, 112, scalar @records) . join('', @records);
}


package InfTest::Response;

sub failed {
    my ($class, $why) = @_;
    return bless { status => 0, error => $why, headers => {}, lines => [],
                   body => '', raw => '' }, $class;
}

sub parse {
    my ($class, $buf, $head) = @_;
    my $self = bless { raw => $buf, status => 0, headers => {}, lines => [],
                       body => '' }, $class;

    # skip interim responses
    while ($buf =~ m{^HTTP/\d\.\d 1\d\d}) {
        my $i = index($buf, "\r\n\r\n");
        last if $i < 0;
        substr($buf, 0, $i + 4) = '';
    }

    my $i = index($buf, "\r\n\r\n");
    if ($i < 0) {
        $self->{error} = 'incomplete response';
        return $self;
    }
    my $hdr = substr($buf, 0, $i);
    my $rest = substr($buf, $i + 4);
    my ($status_line, @lines) = split /\r\n/, $hdr;

    if ($status_line =~ m{^HTTP/(\d\.\d) (\d{3})(?: (.*))?$}) {
        $self->{version} = $1;
        $self->{status} = $2 + 0;
        $self->{reason} = $3 // '';
    }
    for my $l (@lines) {
        next unless $l =~ /^([^:]+):[ \t]*(.*?)[ \t]*$/;
        push @{ $self->{lines} }, [$1, $2];
        push @{ $self->{headers}{lc $1} }, $2;
    }

    if ($head || $self->{status} == 204 || $self->{status} == 304) {
        $self->{body} = '';
    } elsif (($self->header('transfer-encoding') // '') =~ /chunked/i) {
        $self->{body} = InfTest::_dechunk($rest) // $rest;
    } elsif (defined(my $cl = $self->header('content-length'))) {
        $self->{body} = substr($rest, 0, $cl);
    } else {
        $self->{body} = $rest;
    }
    return $self;
}

sub status { return $_[0]->{status}; }
sub body   { return $_[0]->{body}; }
sub raw    { return $_[0]->{raw}; }
sub error  { return $_[0]->{error}; }
sub timed_out { return $_[0]->{timed_out}; }

# first value of a header (case-insensitive name)
sub header {
    my ($self, $name) = @_;
    my $v = $self->{headers}{lc $name};
    return $v ? $v->[0] : undef;
}

# all values of a header
sub headers {
    my ($self, $name) = @_;
    return @{ $self->{headers}{lc $name} || [] };
}

sub header_names {
    my ($self) = @_;
    return map { $_->[0] } @{ $self->{lines} };
}

# the body decoded as JSON (undef if it is not JSON)
sub json {
    my ($self) = @_;
    return $self->{json} if exists $self->{json};
    $self->{json} = InfTest::json_decode($self->{body});
    return $self->{json};
}

# a one-line description for diagnostics
sub summary {
    my ($self) = @_;
    my $b = $self->{body} // '';
    $b = substr($b, 0, 400) . '...' if length $b > 400;
    return "status $self->{status}"
        . ($self->{error} ? " ($self->{error})" : '')
        . ($self->{timed_out} ? ' (timed out)' : '') . ": $b";
}


1;

package RedisTopo;

# Real Redis topologies for the fleet tests, in core Perl only: TLS
# material made with openssl, a redis-server over TLS, a Redis Cluster and a
# Sentinel group.  Everything runs on 127.0.0.1, on ports from an InfTest's
# allocator, with its files under that InfTest's temp dir.
#
#   use RedisTopo qw(:all);
#   plan skip_all => RedisTopo::tools_missing() if RedisTopo::tools_missing();
#   my $t = InfTest->new;
#
# TLS material (EC P-256 keys, files under $t->dir/redistopo/tls/<ca>/):
#   my $ca = make_ca($t, 'ca');              # {name, cert, key, dir}
#   my $c  = make_cert($t, 'server', ca => $ca,
#                cn => 'localhost', san => ['DNS:localhost', 'IP:127.0.0.1'],
#                days => 1, expired => 0, client => 0);
#                                            # {name, cert, key, ca (CA cert)}
#   expired => 1: valid from two days ago to one day ago; client => 1:
#   extendedKeyUsage clientAuth only (else serverAuth and clientAuth, since a
#   cluster node presents its certificate to its peers too).  A wrong CA is
#   another make_ca(), a wrong name cn/san => a name we never connect to.
#   verify_cert($c, $ca) -> {ok, out}        # openssl verify
#   tls_handshake(port => .., ca => .., cert => .., key => ..,
#                 name => '127.0.0.1') -> {ok, error, out}: openssl
#       s_client, which checks the name too (redis-cli does not: it takes
#       a certificate for another name); error as openssl says it
#
# A redis-server over TLS:
#   my $s = start_redis_tls($t, name => 'tls', cert => .., key => .., ca => ..,
#                client_auth => 0|1, plain_port => 0|1, password => ..);
#   $s->port (TLS), $s->plain_port (undef without one), $s->pid
#   $s->cli([{ca, cert, key, password}], @command) -> {rc, out, err}
#       redis-cli --tls, the server's ca and password unless the hash says
#       otherwise; an error reply is in out (redis-cli exits 0 for it)
#   $s->handshake(name => .., ...): tls_handshake() on its TLS port
#   $s->command(@command) (on the plain port), $s->stop
#
# A Redis Cluster (every node also has a plaintext port, the harness's; with
# tls, clients and the nodes' bus and replication use TLS):
#   my $cl = start_cluster($t, primaries => 3, replicas => 1,
#                tls => $c (or {cert, key, ca}), client_auth => 0|1,
#                password => .., node_timeout_ms => 2000, timeout => 60);
#   $cl->seeds            # '127.0.0.1:port' of the primaries (TLS ports
#                         # with tls: what a client is given)
#   $cl->nodes            # [{port, plain_port, tls_port, bus_port, pid,
#                         #   alive, id, role => primary|replica,
#                         #   primary_id, slots => [[from, to], ...]}]
#   $cl->owner_of_slot($slot) -> port; slot_of_key($key) -> slot (also a
#   function: CRC16/XMODEM with the hash tag rules)
#   $cl->reshard(from => $port, to => $port, slots => N) -> [slots moved]
#   $cl->kill_primary($port) -> ($new_primary_port, $seconds)   (SIGKILL)
#   $cl->failover($replica_port) -> $seconds          (CLUSTER FAILOVER)
#   $cl->restart($port) -> $seconds       (a killed node, same ports/files)
#   $cl->cli(@command) -> {rc, out, err}  (redis-cli -c on a seed)
#   $cl->command($port, @command), $cl->wait_stable (every node ok, agreeing
#   on slots and roles, replicas linked), $cl->tls, $cl->stop_cluster
#   Any port of a node (client, plaintext, bus) names it.
#
# A Sentinel group (plaintext; one primary, its replicas, N sentinels):
#   my $g = start_sentinel_group($t, replicas => 1, sentinels => 3,
#                master_name => 'mymaster', password => ..,
#                sentinel_password => .., down_after_ms => 1000,
#                failover_timeout_ms => 5000, quorum => majority,
#                timeout => 60);
#   $g->sentinel_addrs, $g->master_addr ('127.0.0.1:port', asked of a
#   sentinel), $g->failover -> ($new_master_addr, $seconds) (SENTINEL
#   FAILOVER), $g->kill_master -> ($new_master_addr, $seconds) (SIGKILL),
#   $g->nodes ([{kind => data|sentinel, port, pid, alive}]),
#   $g->command($port, @command), $g->master_name, $g->sentinel_password,
#   $g->stop
#
# Common to the three: pids(), password(), stop(), a timeout => N option
# on whatever waits (it dies with what it waited for when the time is up),
# and a redis_cli(port => .., command => [...], tls => .., password => ..,
# follow => 1, timeout => ..) function for any of their ports.
#
# Data nodes run as fleet mode needs Redis: AOF (appendfsync everysec),
# maxmemory-policy noeviction, no RDB snapshots.  Commands of the harness go
# over a plaintext connection of their own (AUTH first with a password).
# A topology's nodes have their dirs (config, AOF, logs) under
# $t->dir/redistopo/nodes/<name>/ (name => .., or kind and number).
# tools_missing() says why a test should skip (no redis-server, no redis-cli
# with TLS, no openssl).
# Every process is stopped by pid (SIGTERM, SIGKILL after a bound) by
# stop(), at DESTROY and in an END block that runs before InfTest's (which
# removes the temp dir); a watchdog stops them and removes the dir if the
# test process is killed.  INFLUENCERS_LEAVE=1 keeps the files, as for
# InfTest.

use strict;
use warnings;

use Exporter 'import';
use File::Basename ();
use File::Path ();
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Scalar::Util ();
use Time::HiRes ();
use InfTest ();

our @EXPORT_OK = qw(
    make_ca make_cert verify_cert start_redis_tls start_cluster
    start_sentinel_group slot_of_key redis_cli tls_handshake
);
our %EXPORT_TAGS = (all => \@EXPORT_OK);

# Bounds, in seconds, generous for a loaded machine
use constant {
    START_TIMEOUT => 20,    # a process answers PING
    SETTLE_TIMEOUT => 60,   # a topology settles after a change
    CLI_TIMEOUT => 30,      # one redis-cli or openssl run
    ASK_TIMEOUT => 3,       # one command of the harness
    STOP_GRACE => 5,        # SIGTERM, then SIGKILL
};

my $SEQ = 0;          # names of our ports, unique in the process
my %NAMED;            # kind => how many topologies got a default name
my @TOPOLOGIES;       # weak: stopped at END
my %LIVE;             # pid => 1 for every redis process of ours
my %DIRS;             # test dirs the watchdog removes
my $WATCHDOG;
my $OWNER = $$;

# ---------------------------------------------------------------------------
# Tools

# redis-cli next to the redis-server that InfTest runs
sub _redis_cli_binary {
    my $dir = File::Basename::dirname(InfTest::redis_server());
    return -x "$dir/redis-cli" ? "$dir/redis-cli" : 'redis-cli';
}

# undef when redis-server, redis-cli with TLS and openssl are there, else
# why the tests that need them skip
sub tools_missing {
    my $why = InfTest::redis_missing();
    return $why if $why;
    my $cli = _run(CLI_TIMEOUT, {}, _redis_cli_binary(), '--help');
    return 'no redis-cli with TLS (apt-get install redis-tools)'
        unless "$cli->{out}$cli->{err}" =~ /--tls/;
    my $ssl = _run(CLI_TIMEOUT, {}, 'openssl', 'version');
    return 'no openssl (apt-get install openssl)' if $ssl->{rc} != 0;
    return undef;
}

# runs a command with its output captured and a bound on its time:
# {rc, out, err}; rc is -1 when it was killed at the bound.  %$env is added
# to its environment (a password stays off the command line).
sub _run {
    my ($timeout, $env, @cmd) = @_;
    pipe(my $out_r, my $out_w) or die "pipe: $!";
    pipe(my $err_r, my $err_w) or die "pipe: $!";
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        close $out_r;
        close $err_r;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>&', $out_w;
        open STDERR, '>&', $err_w;
        @ENV{ keys %$env } = values %$env;
        { no warnings 'exec'; exec @cmd; }
        POSIX::_exit(127);
    }
    close $out_w;
    close $err_w;
    my %buf = (fileno($out_r) => '', fileno($err_r) => '');
    my $sel = IO::Select->new($out_r, $err_r);
    my $end = Time::HiRes::time() + $timeout;
    while ($sel->count) {
        my $left = $end - Time::HiRes::time();
        last if $left <= 0;
        for my $fh ($sel->can_read($left)) {
            my $b = \$buf{ fileno $fh };
            my $n = sysread($fh, $$b, 65536, length $$b);
            next if !defined $n && $!{EINTR};
            $sel->remove($fh) unless $n;
        }
    }
    my $timed_out = $sel->count > 0;
    kill 'KILL', $pid if $timed_out;
    waitpid $pid, 0;
    my $rc = $timed_out ? -1 : $? & 127 ? 128 + ($? & 127) : $? >> 8;
    my ($out, $err) = ($buf{ fileno $out_r }, $buf{ fileno $err_r });
    close $out_r;
    close $err_r;
    $out =~ s/\n\z//;
    return { rc => $rc, out => $out, err => $err };
}

# redis_cli(port => N, command => [...], tls => {ca, cert, key},
#           password => .., follow => 1, timeout => ..): one redis-cli run
# on 127.0.0.1:port; with tls the server is verified against ca and cert and
# key are presented when given; follow is -c (cluster redirections).
sub redis_cli {
    my (%o) = @_;
    my @cmd = (_redis_cli_binary());
    push @cmd, '-h', '127.0.0.1', '-p', $o{port} if $o{port};
    if (my $tls = $o{tls}) {
        push @cmd, '--tls', '--cacert', $tls->{ca};
        push @cmd, '--cert', $tls->{cert}, '--key', $tls->{key}
            if defined $tls->{cert};
    }
    push @cmd, '-c' if $o{follow};
    my %env = defined $o{password} ? (REDISCLI_AUTH => $o{password}) : ();
    return _run($o{timeout} // CLI_TIMEOUT, \%env, @cmd, @{ $o{command} });
}

# polls $check every 0.1 s until it returns a true value (returned), or
# dies after $timeout seconds with what it waited for and the last reason
# it gave, as in "return (0, 'why')"
sub _wait {
    my ($timeout, $what, $check) = @_;
    my $end = Time::HiRes::time() + $timeout;
    my $why = 'never checked';
    while (1) {
        my ($ok, $reason) = $check->();
        return $ok if $ok;
        $why = $reason if defined $reason;
        last if Time::HiRes::time() >= $end;
        Time::HiRes::sleep(0.1);
    }
    die "RedisTopo: $what: not within $timeout s (last: $why)\n";
}

# ---------------------------------------------------------------------------
# RESP on plaintext connections of the harness's own

# one command on a new connection to 127.0.0.1:$port, AUTHed when a password
# is given: the reply as InfTest::_resp_parse gives it, or
# { error => 'harness: ...' } (refused, closed, timed out)
sub _ask_port {
    my ($port, $password, @cmd) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => ASK_TIMEOUT)
        or return { error => "harness: connect to $port: $!" };
    binmode $c;
    my @send = ((defined $password ? (['AUTH', $password]) : ()), \@cmd);
    my $bytes = join '', map { InfTest::_resp_command(@$_) } @send;
    my $off = 0;
    while ($off < length $bytes) {
        my $n = syswrite($c, $bytes, length($bytes) - $off, $off);
        if (!defined $n) {
            next if $!{EINTR};
            return { error => "harness: write to $port: $!" };
        }
        $off += $n;
    }
    my ($buf, $pos, @replies) = ('', 0);
    my $sel = IO::Select->new($c);
    my $end = Time::HiRes::time() + ASK_TIMEOUT;
    while (@replies < @send) {
        my $at = $pos;
        my $r = eval { InfTest::_resp_parse(\$buf, \$pos) };
        if (!$@) {
            push @replies, $r;
            next;
        }
        $pos = $at;
        return { error => "harness: $@" } if $@ ne "incomplete\n";
        my $left = $end - Time::HiRes::time();
        return { error => "harness: $port timed out" }
            if $left <= 0 || !$sel->can_read($left);
        my $n = sysread($c, $buf, 65536, length $buf);
        next if !defined $n && $!{EINTR};
        return { error => "harness: $port closed the connection" } unless $n;
    }
    close $c;
    return $replies[0] if @replies > 1 && ref $replies[0] eq 'HASH';
    return $replies[-1];
}

# "field:value" lines (INFO, CLUSTER INFO) as a hash; {} for an error
sub _fields {
    my ($reply) = @_;
    return {} if !defined $reply || ref $reply;
    my %h;
    for my $line (split /\r?\n/, $reply) {
        $h{$1} = $2 if $line =~ /^([^#:][^:]*):(.*)$/;
    }
    return \%h;
}

# a flat [field, value, ...] reply (SENTINEL MASTER) as a hash
sub _pairs {
    my ($reply) = @_;
    return {} unless ref $reply eq 'ARRAY';
    return +{ @$reply };
}

sub _error { my ($r) = @_; return ref $r eq 'HASH' ? $r->{error} : undef; }

# ---------------------------------------------------------------------------
# Processes: every pid is in %LIVE while it runs, and a watchdog (restarted
# when that set changes) stops them if the test process goes away without
# its END block (SIGKILL)

sub _watch {
    _stop_watchdog();
    my @pids = keys %LIVE;
    return unless @pids;
    my @dirs = keys %DIRS;
    my $owner = $$;
    my $pid = fork;
    return unless defined $pid;
    if ($pid == 0) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP PIPE);
        open STDIN, '<', '/dev/null';
        Time::HiRes::sleep(0.5) while getppid() == $owner;
        kill 'CONT', @pids;
        kill 'TERM', @pids;
        my $end = Time::HiRes::time() + STOP_GRACE;
        Time::HiRes::sleep(0.1)
            while Time::HiRes::time() < $end && grep { kill 0, $_ } @pids;
        _kill_hard($_) for grep { kill 0, $_ } @pids;
        unless ($ENV{INFLUENCERS_LEAVE}) {
            File::Path::remove_tree($_) for @dirs;
        }
        POSIX::_exit(0);
    }
    $WATCHDOG = $pid;
}

sub _stop_watchdog {
    my $pid = $WATCHDOG or return;
    undef $WATCHDOG;
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

# SIGKILL of a redis process and of its forks (a BGSAVE or an AOF rewrite
# child would outlive it)
sub _kill_hard {
    my ($pid) = @_;
    my @forks = map { $_->[0] } InfTest::_children($pid);
    kill 'KILL', $pid, @forks;
    waitpid $pid, 0;
}

# $t->port() under names of our own: free loopback ports it never gave out
sub _port { my ($t) = @_; return $t->port('redistopo-' . ++$SEQ); }

END {
    local ($?, $!, $@);
    if ($$ == $OWNER) {
        $_->stop for grep { defined } @TOPOLOGIES;
        _stop_watchdog();
    }
}

# ---------------------------------------------------------------------------
# TLS material

sub _openssl {
    my ($what, @args) = @_;
    my $r = _run(CLI_TIMEOUT, {}, 'openssl', @args);
    die "RedisTopo: openssl $args[0] ($what) failed (rc $r->{rc}):\n"
        . "$r->{err}$r->{out}\n" if $r->{rc} != 0;
    return $r;
}

sub _write {
    my ($path, $content) = @_;
    open my $fh, '>', $path or die "RedisTopo: cannot write $path: $!";
    print {$fh} $content;
    close $fh or die "RedisTopo: cannot close $path: $!";
    return $path;
}

# make_ca($t, $name, days => 30): a self-signed CA and the files that
# `openssl ca` signs with (its own config, so the system's is never read)
sub make_ca {
    my ($t, $name, %o) = @_;
    my $dir = $t->dir . "/redistopo/tls/$name";
    die "RedisTopo: a CA named $name exists already\n" if -e $dir;
    File::Path::make_path("$dir/issued");
    $DIRS{ $t->dir } = 1;
    _write("$dir/index.txt", '');
    my $cnf = _write("$dir/openssl.cnf", <<"EOF");
[req]
distinguished_name = req_dn
[req_dn]
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ca]
default_ca = this_ca
[this_ca]
database = $dir/index.txt
new_certs_dir = $dir/issued
certificate = $dir/ca.crt
private_key = $dir/ca.key
rand_serial = yes
default_md = sha256
policy = any_name
unique_subject = no
[any_name]
commonName = supplied
EOF
    _openssl("CA $name", 'req', '-x509', '-config', $cnf,
        '-extensions', 'ca_ext', '-newkey', 'ec',
        '-pkeyopt', 'ec_paramgen_curve:P-256', '-noenc',
        '-keyout', "$dir/ca.key", '-out', "$dir/ca.crt",
        '-subj', "/CN=RedisTopo test CA $name", '-days', $o{days} // 30);
    return { name => $name, dir => $dir, cert => "$dir/ca.crt",
             key => "$dir/ca.key", config => $cnf };
}

# openssl's date format, $days from now (negative: in the past)
sub _asn1_time {
    my ($days) = @_;
    my @g = gmtime(time + $days * 86400);
    return sprintf('%04d%02d%02d%02d%02d%02dZ',
        $g[5] + 1900, $g[4] + 1, @g[3, 2, 1, 0]);
}

# make_cert($t, $name, ca => $ca, cn => 'localhost',
#           san => ['DNS:localhost', 'IP:127.0.0.1'], days => 1,
#           expired => 0|1, client => 0|1): a key and a certificate that $ca
# signs.  `openssl ca` sets both ends of the validity, so an expired one
# really was valid once (openssl 3.0's x509 has no -not_before/-not_after).
sub make_cert {
    my ($t, $name, %o) = @_;
    my $ca = $o{ca} or die "RedisTopo: make_cert $name: no ca\n";
    my $base = "$ca->{dir}/$name";
    die "RedisTopo: CA $ca->{name} made a $name already\n" if -e "$base.crt";
    my $cn = $o{cn} // 'localhost';
    my $san = $o{san} // ['DNS:localhost', 'IP:127.0.0.1'];
    my $ext = "[leaf]\nbasicConstraints = critical,CA:FALSE\n"
        . "keyUsage = critical,digitalSignature\n"
        . 'extendedKeyUsage = '
        . ($o{client} ? 'clientAuth' : 'serverAuth,clientAuth') . "\n";
    $ext .= 'subjectAltName = ' . join(',', @$san) . "\n" if @$san;
    _write("$base.ext", $ext);
    _openssl("request for $name", 'req', '-new', '-config', $ca->{config},
        '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-noenc',
        '-keyout', "$base.key", '-out', "$base.csr", '-subj', "/CN=$cn");
    my @validity = $o{expired}
        ? ('-startdate', _asn1_time(-2), '-enddate', _asn1_time(-1))
        : ('-days', $o{days} // 1);
    _openssl("certificate $name", 'ca', '-batch', '-config', $ca->{config},
        '-in', "$base.csr", '-out', "$base.crt", '-notext',
        '-extfile', "$base.ext", '-extensions', 'leaf', @validity);
    return { name => $name, cert => "$base.crt", key => "$base.key",
             ca => $ca->{cert} };
}

# verify_cert($cert, $ca): openssl verify of a make_cert() against a
# make_ca(): {ok, out}
sub verify_cert {
    my ($cert, $ca) = @_;
    my $r = _run(CLI_TIMEOUT, {}, 'openssl', 'verify', '-CAfile', $ca->{cert},
                 $cert->{cert});
    return { ok => $r->{rc} == 0 ? 1 : 0, out => "$r->{out}$r->{err}" };
}

# tls_handshake(port => N, ca => .., cert => .., key => ..,
#               name => '127.0.0.1'): an openssl s_client handshake that
# verifies the server's certificate, its name included: {ok, error, out}
# (error as openssl says it: "certificate has expired", "IP address
# mismatch", ...).  With TLS 1.3 a server's refusal of the client's
# certificate comes after the handshake: redis_cli() shows that one.
sub tls_handshake {
    my (%o) = @_;
    my $name = $o{name} // '127.0.0.1';
    my @cmd = ('openssl', 's_client', '-connect', "127.0.0.1:$o{port}",
               '-CAfile', $o{ca}, '-verify_return_error', '-brief',
               $name =~ /^[\d.]+$|:/ ? ('-verify_ip', $name)
                                    : ('-verify_hostname', $name));
    push @cmd, '-cert', $o{cert}, '-key', $o{key} if defined $o{cert};
    my $r = _run(CLI_TIMEOUT, {}, @cmd);
    my $text = "$r->{out}$r->{err}";
    my ($error) = $text =~ /verify error:num=\d+:([^\n]*)/;
    $error //= 'no handshake' if $r->{rc} != 0;
    return { ok => $r->{rc} == 0 ? 1 : 0, error => $error, out => $text };
}

# ---------------------------------------------------------------------------
# CRC16/XMODEM (polynomial 0x1021, initial value 0), as Redis Cluster hashes
# keys to slots

my @CRC16 = map {
    my $crc = $_ << 8;
    $crc = $crc & 0x8000 ? ($crc << 1) ^ 0x1021 : $crc << 1 for 1 .. 8;
    $crc & 0xffff;
} 0 .. 255;

# the slot of a key: only the part between the first "{" and the "}" after
# it is hashed, when that part is not empty
sub slot_of_key {
    my ($key) = @_;
    utf8::encode($key) if utf8::is_utf8($key);
    my $open = index($key, '{');
    if ($open >= 0) {
        my $close = index($key, '}', $open + 1);
        $key = substr($key, $open + 1, $close - $open - 1)
            if $close > $open + 1;
    }
    my $crc = 0;
    $crc = (($crc << 8) & 0xffff) ^ $CRC16[(($crc >> 8) ^ $_) & 0xff]
        for unpack 'C*', $key;
    return $crc & 16383;
}

# ---------------------------------------------------------------------------
# Topologies

sub start_redis_tls { return RedisTopo::Server->start(@_); }
sub start_cluster { return RedisTopo::Cluster->start(@_); }
sub start_sentinel_group { return RedisTopo::Sentinel->start(@_); }


package RedisTopo::Topology;

# What the three kinds share: their nodes (processes), each a hash:
#   name, dir, kind, port (plaintext, 0 for none), tls_port, bus_port,
#   ports (the fields above it gets at its first start), password (what the
#   harness AUTHs with), pid (undef when it does not run), id (cluster)
# A subclass says how a node runs with _command_line($node).

sub _new {
    my ($class, $t, $kind, %o) = @_;
    my $name = $o{name} // $kind . ++$NAMED{$kind};
    my $dir = $t->dir . "/redistopo/nodes/$name";
    die "RedisTopo: a topology named $name exists already\n" if -e $dir;
    File::Path::make_path($dir);
    $DIRS{ $t->dir } = 1;
    my $self = bless {
        t        => $t,    # kept: its dir must outlive our processes
        name     => $name,
        dir      => $dir,
        nodes    => [],
        owner    => $$,
        password => $o{password},
        timeout  => $o{timeout} // RedisTopo::SETTLE_TIMEOUT,
    }, $class;
    push @TOPOLOGIES, $self;
    Scalar::Util::weaken($TOPOLOGIES[-1]);
    return $self;
}

sub _add_node {
    my ($self, %n) = @_;
    $n{dir} = "$self->{dir}/$n{name}";
    $n{port} //= 0;
    File::Path::make_path($n{dir});
    push @{ $self->{nodes} }, \%n;
    return \%n;
}

# what every data node runs with: fleet mode's AOF and noeviction, no RDB
# snapshots, no wait before a full sync (5 s by default); a password is
# also the one a replica gives its primary
sub _data_args {
    my ($self, $n) = @_;
    my @a = ('--port', $n->{port}, '--bind', '127.0.0.1',
        '--dir', $n->{dir}, '--logfile', "$n->{dir}/redis.log",
        '--daemonize', 'no', '--save', '',
        '--appendonly', 'yes', '--appendfsync', 'everysec',
        '--maxmemory-policy', 'noeviction', '--repl-diskless-sync-delay', '0');
    push @a, '--requirepass', $n->{password}, '--masterauth', $n->{password}
        if defined $n->{password};
    if (my $tls = $n->{tls}) {
        push @a, '--tls-port', $n->{tls_port},
            '--tls-cert-file', $tls->{cert}, '--tls-key-file', $tls->{key},
            '--tls-ca-cert-file', $tls->{ca},
            '--tls-auth-clients', $n->{client_auth} ? 'yes' : 'no';
    }
    return @a;
}

sub _log {
    my ($self, $n, $from) = @_;
    my $text = '';
    for my $f ('redis.log', 'stdout.log') {
        open my $fh, '<', "$n->{dir}/$f" or next;
        local $/;
        my $c = <$fh> // '';
        $text .= $f eq 'redis.log' && $from ? substr($c, $from) : $c;
    }
    return $text;
}

sub _log_tail {
    my ($self, $n) = @_;
    my @lines = split /\n/, $self->_log($n, $n->{log_from});
    splice @lines, 0, @lines - 15 if @lines > 15;
    return join "\n", @lines;
}

sub _spawn {
    my ($self, $n) = @_;
    my @cmd = (InfTest::redis_server(), $self->_command_line($n));
    $n->{log_from} = -s "$n->{dir}/redis.log" || 0;
    my $pid = InfTest::spawn("$n->{dir}/stdout.log", undef, @cmd);
    $n->{pid} = $pid;
    $LIVE{$pid} = 1;
    RedisTopo::_watch();
}

sub _gone {
    my ($n) = @_;
    delete $LIVE{ $n->{pid} } if $n->{pid};
    $n->{pid} = undef;
    RedisTopo::_watch();
}

# a node that never ran: started on new ports, replaced when another process
# took one of them since they were found free (up to three times)
sub _start_fresh {
    my ($self, $n) = @_;
    for my $try (1 .. 3) {
        $n->{$_} = RedisTopo::_port($self->{t}) for @{ $n->{ports} };
        $self->_spawn($n);
        return $n if $self->_wait_ready($n) eq 'up';
    }
    die "RedisTopo: $self->{name}/$n->{name}: its ports were taken three times\n";
}

# 'up' when the node answers, 'busy' when it exited because a port was
# taken; dies when it exited otherwise or did not answer in time
sub _wait_ready {
    my ($self, $n) = @_;
    my $end = Time::HiRes::time() + RedisTopo::START_TIMEOUT;
    while (Time::HiRes::time() < $end) {
        if (waitpid($n->{pid}, POSIX::WNOHANG()) == $n->{pid}) {
            _gone($n);
            my $log = $self->_log($n, $n->{log_from});
            return 'busy' if $log =~ /Address already in use/;
            die "RedisTopo: $self->{name}/$n->{name} exited at start:\n"
                . $self->_log_tail($n) . "\n";
        }
        return 'up' if $self->_ready($n);
        Time::HiRes::sleep(0.05);
    }
    $self->_stop_nodes($n);
    die "RedisTopo: $self->{name}/$n->{name} did not answer within "
        . RedisTopo::START_TIMEOUT . " s:\n" . $self->_log_tail($n) . "\n";
}

# a node without a plaintext port (a TLS server) is not asked over TLS (its
# certificate may be one a client must refuse): its log says when it is up
sub _ready {
    my ($self, $n) = @_;
    if ($n->{port}) {
        my $r = $self->_ask($n, 'PING');
        return defined $r && !ref $r && $r eq 'PONG';
    }
    return $self->_log($n, $n->{log_from}) =~ /Ready to accept connections/;
}

sub _ask {
    my ($self, $n, @cmd) = @_;
    return { error => "harness: $n->{name} has no plaintext port" }
        unless $n->{port};
    return RedisTopo::_ask_port($n->{port}, $n->{password}, @cmd);
}

sub _info {
    my ($self, $n, $section) = @_;
    return RedisTopo::_fields($self->_ask($n, 'INFO', $section));
}

# the node that has this port (plaintext, TLS or bus)
sub _node {
    my ($self, $port) = @_;
    for my $n (@{ $self->{nodes} }) {
        return $n if grep { ($n->{$_} // 0) == $port } qw(port tls_port bus_port);
    }
    die "RedisTopo: $self->{name} has no node on port $port\n";
}

sub _live { my ($self) = @_; return grep { $_->{pid} } @{ $self->{nodes} }; }

# command($port, @command): one command to a node (any of its ports) on a
# plaintext connection of the harness's, AUTHed with the node's password
sub command {
    my ($self, $port, @cmd) = @_;
    return $self->_ask($self->_node($port), @cmd);
}

sub pids { my ($self) = @_; return map { $_->{pid} } $self->_live; }

sub password { return $_[0]->{password}; }

sub _kill {
    my ($self, $n) = @_;
    RedisTopo::_kill_hard($n->{pid});
    _gone($n);
}

# SIGTERM to all of them at once (SIGCONT first, in case one is stopped),
# then SIGKILL for any still there after the grace period
sub _stop_nodes {
    my ($self, @nodes) = @_;
    my @pids = map { $_->{pid} } grep { $_->{pid} } @nodes;
    return unless @pids;
    kill 'CONT', @pids;
    kill 'TERM', @pids;
    my $end = Time::HiRes::time() + RedisTopo::STOP_GRACE;
    for my $pid (@pids) {
        my $left = $end - Time::HiRes::time();
        RedisTopo::_kill_hard($pid)
            unless defined InfTest::_wait_pid($pid, $left > 0 ? $left : 0.01);
    }
    for my $n (@nodes) {
        delete $LIVE{ $n->{pid} } if $n->{pid};
        $n->{pid} = undef;
    }
    RedisTopo::_watch();
}

sub stop {
    my ($self) = @_;
    return $self unless $self->{owner} == $$;
    local $SIG{PIPE} = 'IGNORE';
    $self->_stop_nodes(@{ $self->{nodes} });
    return $self;
}

sub DESTROY {
    my ($self) = @_;
    local ($?, $!, $@);
    $self->stop;
}


package RedisTopo::Server;

# start_redis_tls($t, name => .., cert => .., key => .., ca => ..,
#                 client_auth => 0|1, plain_port => 0|1, password => ..)

our @ISA = ('RedisTopo::Topology');

sub start {
    my ($class, $t, %o) = @_;
    for my $f (qw(cert key ca)) {
        die "RedisTopo: start_redis_tls: no $f\n" unless defined $o{$f};
    }
    my $self = $class->_new($t, 'tls', %o);
    $self->{tls} = { map { $_ => $o{$_} } qw(cert key ca) };
    $self->{node} = $self->_add_node(
        name => 'server', kind => 'data', password => $o{password},
        tls => $self->{tls}, client_auth => $o{client_auth},
        ports => [$o{plain_port} ? ('port', 'tls_port') : 'tls_port']);
    $self->_start_fresh($self->{node});
    return $self;
}

sub _command_line { my ($self, $n) = @_; return $self->_data_args($n); }

sub port { return $_[0]->{node}{tls_port}; }
sub plain_port { return $_[0]->{node}{port} || undef; }
sub pid { return $_[0]->{node}{pid}; }

# cli([{ca, cert, key, password}], @command): redis-cli --tls on the TLS
# port, with the server's CA and password unless the hash says otherwise
sub cli {
    my ($self, @cmd) = @_;
    my %o = ref $cmd[0] eq 'HASH' ? %{ shift @cmd } : ();
    return RedisTopo::redis_cli(
        port     => $self->port,
        tls      => { ca => $o{ca} // $self->{tls}{ca},
                      cert => $o{cert}, key => $o{key} },
        password => exists $o{password} ? $o{password} : $self->{password},
        command  => \@cmd);
}

sub handshake {
    my ($self, %o) = @_;
    return RedisTopo::tls_handshake(port => $self->port,
                                    ca => $self->{tls}{ca}, %o);
}

sub command {
    my ($self, @cmd) = @_;
    return $self->_ask($self->{node}, @cmd);
}


package RedisTopo::Cluster;

# start_cluster($t, primaries => 3, replicas => 1, tls => {cert, key, ca},
#               client_auth => 0|1, password => .., node_timeout_ms => 2000,
#               timeout => 60)

our @ISA = ('RedisTopo::Topology');

sub start {
    my ($class, $t, %o) = @_;
    my $self = $class->_new($t, 'cluster', %o);
    my $primaries = $o{primaries} // 3;
    my $replicas = $o{replicas} // 1;
    $self->{tls} = $o{tls} && +{ map { $_ => $o{tls}{$_} } qw(cert key ca) };
    $self->{node_timeout} = $o{node_timeout_ms} // 2000;
    # the plaintext port is the harness's; the bus gets a port of its own,
    # since port + 10000 may be past 65535 or taken
    my @ports = ('port', ($self->{tls} ? 'tls_port' : ()), 'bus_port');
    my @nodes = map {
        $self->_add_node(name => "node$_", kind => 'data',
            password => $o{password}, tls => $self->{tls},
            client_auth => $o{client_auth}, ports => \@ports)
    } 1 .. $primaries * (1 + $replicas);
    $self->_start_fresh($_) for @nodes;

    # redis-cli makes the first nodes given the primaries
    my $r = $self->_cli(timeout => $self->{timeout},
        command => ['--cluster', 'create',
                    (map { '127.0.0.1:' . _client_port($_) } @nodes),
                    '--cluster-replicas', $replicas, '--cluster-yes']);
    die "RedisTopo: redis-cli --cluster create failed (rc $r->{rc}):\n"
        . "$r->{out}\n$r->{err}\n" if $r->{rc} != 0;
    for my $n (@nodes) {
        my $id = $self->_ask($n, 'CLUSTER', 'MYID');
        die "RedisTopo: CLUSTER MYID on $n->{name}: " . RedisTopo::_error($id)
            . "\n" if ref $id;
        $n->{id} = $id;
    }
    $self->wait_stable;
    return $self;
}

sub _command_line {
    my ($self, $n) = @_;
    return ($self->_data_args($n),
        '--cluster-enabled', 'yes',
        '--cluster-config-file', "$n->{dir}/nodes.conf",
        '--cluster-port', $n->{bus_port},
        '--cluster-node-timeout', $self->{node_timeout},
        ($self->{tls} ? ('--tls-cluster', 'yes', '--tls-replication', 'yes')
                      : ()));
}

# the port a client is given (and MOVED names): TLS with tls
sub _client_port { my ($n) = @_; return $n->{tls_port} || $n->{port}; }

sub tls { return $_[0]->{tls}; }

# redis-cli with the cluster's TLS material and password
sub _cli {
    my ($self, %o) = @_;
    return RedisTopo::redis_cli(tls => $self->{tls},
                                password => $self->{password}, %o);
}

# cli(@command): redis-cli -c on a live primary, following redirections
sub cli {
    my ($self, @cmd) = @_;
    my ($seed) = $self->seeds or die "RedisTopo: $self->{name}: no primary\n";
    my ($port) = $seed =~ /:(\d+)$/;
    return $self->_cli(port => $port, follow => 1, command => \@cmd);
}

# CLUSTER NODES as node $n sees it: {id => {id, primary (0|1), failed,
# connected (its bus link), primary_id, slots => [[from, to], ...]}} (slots
# being migrated, "[...]", are left out), or undef
sub _view {
    my ($self, $n) = @_;
    my $r = $self->_ask($n, 'CLUSTER', 'NODES');
    return undef if ref $r || !defined $r;
    my %v;
    for my $line (split /\n/, $r) {
        my ($id, undef, $flags, $primary, undef, undef, undef, $link, @slots)
            = split ' ', $line;
        next unless defined $primary;
        my %f = map { $_ => 1 } split /,/, $flags;
        $v{$id} = {
            id         => $id,
            primary    => $f{master} ? 1 : 0,
            failed     => $f{fail} || $f{'fail?'} ? 1 : 0,
            connected  => $link eq 'connected' ? 1 : 0,
            primary_id => $primary eq '-' ? undef : $primary,
            slots      => [ map { /^(\d+)(?:-(\d+))?$/ ? [$1, $2 // $1] : () }
                            @slots ],
        };
    }
    return \%v;
}

# the view of the first live node that answers
sub _some_view {
    my ($self) = @_;
    for my $n ($self->_live) {
        my $v = $self->_view($n);
        return $v if $v;
    }
    die "RedisTopo: $self->{name}: no live node answers CLUSTER NODES\n";
}

sub _by_id {
    my ($self, $id) = @_;
    my ($n) = grep { ($_->{id} // '') eq $id } @{ $self->{nodes} };
    return $n;
}

# nodes(): [{port, plain_port, tls_port, bus_port, pid, alive, id, role
# (primary|replica), primary_id, slots}], roles and slots as a live node
# sees them
sub nodes {
    my ($self) = @_;
    my $v = $self->_some_view;
    return [ map {
        my $e = $v->{ $_->{id} } || {};
        +{
            port       => _client_port($_),
            plain_port => $_->{port},
            tls_port   => $_->{tls_port},
            bus_port   => $_->{bus_port},
            pid        => $_->{pid},
            alive      => $_->{pid} ? 1 : 0,
            id         => $_->{id},
            role       => $e->{primary} ? 'primary' : 'replica',
            primary_id => $e->{primary_id},
            slots      => $e->{slots} || [],
        }
    } @{ $self->{nodes} } ];
}

# '127.0.0.1:port' of the live primaries that hold slots
sub seeds {
    my ($self) = @_;
    return map { "127.0.0.1:$_->{port}" }
           grep { $_->{alive} && $_->{role} eq 'primary' && @{ $_->{slots} } }
           @{ $self->nodes };
}

sub slot_of_key { my ($self, $key) = @_; return RedisTopo::slot_of_key($key); }

sub owner_of_slot {
    my ($self, $slot) = @_;
    for my $n (@{ $self->nodes }) {
        return $n->{port}
            if grep { $_->[0] <= $slot && $slot <= $_->[1] } @{ $n->{slots} };
    }
    return undef;
}

# a signature of a view: who owns which slots, and the role of each live
# node (a primary that just handed over is still a primary without slots in
# some views for a moment)
sub _signature {
    my ($self, $v) = @_;
    my %live = map { $_->{id} => 1 } $self->_live;
    return join ' ', map {
        "$_->{id}="
        . ($live{ $_->{id} } ? ($_->{primary_id} // 'primary') . ':' : '')
        . join(',', map { "$_->[0]-$_->[1]" } @{ $_->{slots} })
    } sort { $a->{id} cmp $b->{id} }
      grep { @{ $_->{slots} } || $live{ $_->{id} } } values %$v;
}

# (1) or (0, why): every live node says cluster_state:ok with all slots ok,
# knows every node, sees the same slot owners (live ones) and roles, and
# the other live nodes connected and not failing (a replica just back may
# not have its bus link to its primary yet: CLUSTER FAILOVER refuses then);
# every live replica's link to its primary is up
sub _stable {
    my ($self) = @_;
    my $total = @{ $self->{nodes} };
    my $map;
    for my $n ($self->_live) {
        my $i = RedisTopo::_fields($self->_ask($n, 'CLUSTER', 'INFO'));
        return (0, "$n->{name}: cluster_state:" . ($i->{cluster_state} // '?'))
            unless ($i->{cluster_state} // '') eq 'ok';
        return (0, "$n->{name}: cluster_slots_ok:$i->{cluster_slots_ok}")
            unless $i->{cluster_slots_ok} == 16384;
        return (0, "$n->{name} knows $i->{cluster_known_nodes} of $total nodes")
            unless $i->{cluster_known_nodes} == $total;
        my $v = $self->_view($n) or return (0, "$n->{name}: no CLUSTER NODES");
        my $m = $self->_signature($v);
        $map //= $m;
        return (0, "$n->{name} sees other slot owners or roles") if $m ne $map;
        for my $owner (grep { @{ $_->{slots} } } values %$v) {
            my $o = $self->_by_id($owner->{id});
            return (0, "a node that is down owns slots in $n->{name}'s view")
                unless $o && $o->{pid};
        }
        for my $other (grep { $_ != $n } $self->_live) {
            my $e = $v->{ $other->{id} };
            return (0, "$n->{name} sees $other->{name} failing or unlinked")
                unless $e && $e->{connected} && !$e->{failed};
        }
        next if $v->{ $n->{id} }{primary};
        my $link = $self->_info($n, 'replication')->{master_link_status} // '?';
        return (0, "$n->{name}: master_link_status:$link") if $link ne 'up';
    }
    return 1;
}

# wait_stable(timeout => N): until _stable() says so
sub wait_stable {
    my ($self, %o) = @_;
    return RedisTopo::_wait($o{timeout} // $self->{timeout},
        "$self->{name} to settle", sub { $self->_stable });
}

# reshard(from => $port, to => $port, slots => N, timeout => ..): moves N
# slots (redis-cli takes the lowest of the source's) and their keys; the
# slots that moved, once every node agrees
sub reshard {
    my ($self, %o) = @_;
    my $from = $self->_node($o{from});
    my $to = $self->_node($o{to});
    my $count = $o{slots} or die "RedisTopo: reshard: how many slots?\n";
    my %before = map { $_ => 1 } _slots_of($self->_some_view, $from->{id});
    my $r = $self->_cli(timeout => $o{timeout} // $self->{timeout},
        command => ['--cluster', 'reshard', '127.0.0.1:' . _client_port($to),
                    '--cluster-from', $from->{id}, '--cluster-to', $to->{id},
                    '--cluster-slots', $count, '--cluster-yes']);
    die "RedisTopo: redis-cli --cluster reshard failed (rc $r->{rc}):\n"
        . "$r->{out}\n$r->{err}\n" if $r->{rc} != 0;
    $self->wait_stable(%o);
    my @moved = grep { $before{$_} } _slots_of($self->_some_view, $to->{id});
    die "RedisTopo: reshard moved " . scalar(@moved) . " slots, not $count\n"
        if @moved != $count;
    return \@moved;
}

sub _slots_of {
    my ($v, $id) = @_;
    return map { $_->[0] .. $_->[1] } @{ $v->{$id}{slots} };
}

# kill_primary($port, timeout => ..): SIGKILL of a primary, then until one
# of its replicas has its slots and the cluster is stable again:
# (the new primary's port, seconds since the kill)
sub kill_primary {
    my ($self, $port, %o) = @_;
    my $n = $self->_node($port);
    my $v = $self->_some_view;
    die "RedisTopo: $port is not a primary with slots\n"
        unless $n->{pid} && $v->{ $n->{id} }{primary}
               && @{ $v->{ $n->{id} }{slots} };
    my @replicas = grep {
        $_->{pid} && ($v->{ $_->{id} }{primary_id} // '') eq $n->{id}
    } @{ $self->{nodes} };
    die "RedisTopo: primary $port has no live replica\n" unless @replicas;
    my $t0 = Time::HiRes::time();
    $self->_kill($n);
    my $new = RedisTopo::_wait($o{timeout} // $self->{timeout},
        "a replica of $port to take over", sub {
            my ($up) = grep {
                my $rv = $self->_view($_);
                $rv && $rv->{ $_->{id} }{primary} && @{ $rv->{ $_->{id} }{slots} }
            } @replicas;
            return (0, "no replica of $port is a primary yet") unless $up;
            my ($ok, $why) = $self->_stable;
            return $ok ? $up : (0, $why);
        });
    return (_client_port($new), Time::HiRes::time() - $t0);
}

# failover($replica_port, timeout => ..): CLUSTER FAILOVER (coordinated with
# its primary) on a replica, then until it owns its former primary's slots,
# that one is its replica and the cluster is stable: seconds taken
sub failover {
    my ($self, $port, %o) = @_;
    my $n = $self->_node($port);
    my $old = $self->_some_view->{ $n->{id} }{primary_id}
        or die "RedisTopo: $port is not a replica\n";
    my $t0 = Time::HiRes::time();
    my $r = $self->_ask($n, 'CLUSTER', 'FAILOVER');
    die "RedisTopo: CLUSTER FAILOVER on $port: " . RedisTopo::_error($r) . "\n"
        if ref $r;
    RedisTopo::_wait($o{timeout} // $self->{timeout},
        "$port to take over from its primary", sub {
            my $v = $self->_view($n) or return (0, "$port does not answer");
            return (0, "$port is not a primary yet")
                unless $v->{ $n->{id} }{primary} && @{ $v->{ $n->{id} }{slots} };
            my $was = $self->_by_id($old);
            if ($was && $was->{pid}) {
                my $wv = $self->_view($was)
                    or return (0, 'the old primary does not answer');
                return (0, 'the old primary is not its replica yet')
                    unless ($wv->{$old}{primary_id} // '') eq $n->{id};
            }
            return $self->_stable;
        });
    return Time::HiRes::time() - $t0;
}

# restart($port, timeout => ..): a killed node again, with its ports, its
# nodes.conf and its AOF; until the cluster is stable with it (a primary
# that was replaced comes back as a replica): seconds taken
sub restart {
    my ($self, $port, %o) = @_;
    my $n = $self->_node($port);
    die "RedisTopo: $port is running\n" if $n->{pid};
    my $t0 = Time::HiRes::time();
    $self->_spawn($n);
    $self->_wait_ready($n) eq 'up'
        or die "RedisTopo: $port was taken by another process\n";
    $self->wait_stable(%o);
    return Time::HiRes::time() - $t0;
}

sub stop_cluster { my ($self) = @_; return $self->stop; }


package RedisTopo::Sentinel;

# start_sentinel_group($t, replicas => 1, sentinels => 3,
#     master_name => 'mymaster', password => .., sentinel_password => ..,
#     down_after_ms => 1000, failover_timeout_ms => 5000, quorum => majority,
#     timeout => 60)

our @ISA = ('RedisTopo::Topology');

sub start {
    my ($class, $t, %o) = @_;
    my $self = $class->_new($t, 'sentinel', %o);
    my $replicas = $o{replicas} // 1;
    my $sentinels = $o{sentinels} // 3;
    $self->{master_name} = $o{master_name} // 'mymaster';
    $self->{sentinel_password} = $o{sentinel_password};
    $self->{down_after} = $o{down_after_ms} // 1000;
    $self->{failover_timeout} = $o{failover_timeout_ms} // 5000;
    $self->{quorum} = $o{quorum} // int($sentinels / 2) + 1;

    my @data = map {
        $self->_add_node(name => "data$_", kind => 'data',
                         password => $o{password}, ports => ['port'])
    } 0 .. $replicas;
    $self->{first} = $data[0];
    $self->_start_fresh($_) for @data;
    # the replicas are online before the sentinels come: a sentinel's first
    # INFO of the primary finds them (the next one is 10 s later)
    RedisTopo::_wait($self->{timeout}, "$replicas replica(s) online", sub {
        my $i = $self->_info($data[0], 'replication');
        my $online = grep { ($i->{"slave$_"} // '') =~ /state=online/ }
                     0 .. $replicas - 1;
        return 1 if $online == $replicas;
        return (0, "$online of $replicas replicas online");
    });

    my @sentinels = map {
        $self->_add_node(name => "sentinel$_", kind => 'sentinel',
                         password => $o{sentinel_password}, ports => ['port'])
    } 1 .. $sentinels;
    $self->_start_fresh($_) for @sentinels;
    RedisTopo::_wait($self->{timeout}, 'the sentinels to know the group',
        sub { $self->_known($replicas, $sentinels) });
    return $self;
}

sub _command_line {
    my ($self, $n) = @_;
    if ($n->{kind} eq 'data') {
        my @a = $self->_data_args($n);
        push @a, '--replicaof', '127.0.0.1', $self->{first}{port}
            if $n != $self->{first};
        return @a;
    }
    # a sentinel rewrites its own config file: one for each
    my $m = $self->{master_name};
    my $conf = "port $n->{port}\nbind 127.0.0.1\ndaemonize no\n"
        . "dir $n->{dir}\nlogfile $n->{dir}/redis.log\n"
        . "sentinel monitor $m 127.0.0.1 $self->{first}{port} $self->{quorum}\n"
        . "sentinel down-after-milliseconds $m $self->{down_after}\n"
        . "sentinel failover-timeout $m $self->{failover_timeout}\n"
        . "sentinel parallel-syncs $m 1\n";
    $conf .= "sentinel auth-pass $m $self->{password}\n"
        if defined $self->{password};
    # the sentinels also AUTH to one another
    $conf .= "requirepass $n->{password}\nsentinel sentinel-pass $n->{password}\n"
        if defined $n->{password};
    RedisTopo::_write("$n->{dir}/sentinel.conf", $conf);
    return ("$n->{dir}/sentinel.conf", '--sentinel');
}

sub _sentinels {
    my ($self) = @_;
    return grep { $_->{kind} eq 'sentinel' } $self->_live;
}

sub sentinel_password { return $_[0]->{sentinel_password}; }
sub master_name { return $_[0]->{master_name}; }

sub sentinel_addrs {
    my ($self) = @_;
    return map { "127.0.0.1:$_->{port}" } $self->_sentinels;
}

sub nodes {
    my ($self) = @_;
    return [ map { +{ kind => $_->{kind}, port => $_->{port}, pid => $_->{pid},
                      alive => $_->{pid} ? 1 : 0 } } @{ $self->{nodes} } ];
}

# every live sentinel: the primary is up, with its replicas (links ok) and
# the other sentinels
sub _known {
    my ($self, $replicas, $sentinels) = @_;
    my $m = $self->{master_name};
    for my $s ($self->_sentinels) {
        my $i = RedisTopo::_pairs($self->_ask($s, 'SENTINEL', 'MASTER', $m));
        return (0, "$s->{name}: master flags " . ($i->{flags} // '?'))
            unless ($i->{flags} // '') eq 'master';
        return (0, "$s->{name} knows $i->{'num-slaves'} replica(s)")
            unless $i->{'num-slaves'} == $replicas;
        return (0, "$s->{name} knows $i->{'num-other-sentinels'} other sentinel(s)")
            unless $i->{'num-other-sentinels'} == $sentinels - 1;
        my $r = $self->_ask($s, 'SENTINEL', 'REPLICAS', $m);
        for my $x (map { RedisTopo::_pairs($_) } ref $r eq 'ARRAY' ? @$r : ()) {
            return (0, "$s->{name}: replica $x->{name}: $x->{flags}, "
                       . "link $x->{'master-link-status'}")
                unless $x->{flags} eq 'slave'
                    && $x->{'master-link-status'} eq 'ok';
        }
    }
    return 1;
}

sub _master_addr_of {
    my ($self, $s) = @_;
    my $r = $self->_ask($s, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME',
                        $self->{master_name});
    return ref $r eq 'ARRAY' && @$r == 2 ? "$r->[0]:$r->[1]" : undef;
}

# the primary's '127.0.0.1:port', as the first live sentinel says
sub master_addr {
    my ($self) = @_;
    my ($s) = $self->_sentinels or die "RedisTopo: $self->{name}: no sentinel\n";
    return $self->_master_addr_of($s)
        // die "RedisTopo: $s->{name} names no master\n";
}

# (the new address) or (0, why): every live sentinel names the same primary,
# not $old, and is done with the failover; that node says role:master
sub _switched {
    my ($self, $old) = @_;
    my $addr;
    for my $s ($self->_sentinels) {
        my $a = $self->_master_addr_of($s) // '?';
        return (0, "$s->{name} says $a") if $a eq $old || $a eq '?';
        $addr //= $a;
        return (0, "sentinels say $addr and $a") if $a ne $addr;
        my $i = RedisTopo::_pairs(
            $self->_ask($s, 'SENTINEL', 'MASTER', $self->{master_name}));
        return (0, "$s->{name}: flags $i->{flags}")
            if ($i->{flags} // '') =~ /failover/;
    }
    my ($port) = $addr =~ /:(\d+)$/;
    my $role = $self->_info($self->_node($port), 'replication')->{role} // '?';
    return $role eq 'master' ? $addr : (0, "$addr says role:$role");
}

# failover(timeout => ..): SENTINEL FAILOVER (asked again while a sentinel
# has no good replica yet), then until the sentinels follow:
# (the new master's address, seconds taken)
sub failover {
    my ($self, %o) = @_;
    my $timeout = $o{timeout} // $self->{timeout};
    my $old = $self->master_addr;
    my ($s) = $self->_sentinels;
    my $t0 = Time::HiRes::time();
    RedisTopo::_wait($timeout, 'SENTINEL FAILOVER to be accepted', sub {
        my $r = $self->_ask($s, 'SENTINEL', 'FAILOVER', $self->{master_name});
        my $e = RedisTopo::_error($r);
        return 1 unless defined $e;
        die "RedisTopo: SENTINEL FAILOVER: $e\n" unless $e =~ /NOGOODSLAVE|INPROG/;
        return (0, $e);
    });
    my $new = RedisTopo::_wait($timeout,
        "the sentinels to follow the failover from $old",
        sub { $self->_switched($old) });
    return ($new, Time::HiRes::time() - $t0);
}

# kill_master(timeout => ..): SIGKILL of the primary, then until the
# sentinels have failed over: (the new master's address, seconds taken)
sub kill_master {
    my ($self, %o) = @_;
    my $old = $self->master_addr;
    my ($port) = $old =~ /:(\d+)$/;
    my $t0 = Time::HiRes::time();
    $self->_kill($self->_node($port));
    my $new = RedisTopo::_wait($o{timeout} // $self->{timeout},
        "the sentinels to replace the killed $old",
        sub { $self->_switched($old) });
    return ($new, Time::HiRes::time() - $t0);
}

1;

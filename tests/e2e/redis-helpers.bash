# Redis stopped and started again during a test (sourced with
# `load redis-helpers` after helpers.bash). redis_kill saves how the stack's
# Redis was started, redis_start starts it the same way; a test that stops
# Redis should restart it in its teardown when $BATS_FILE_TMPDIR/redis-down
# exists.

redis_pid() { head -n 1 "$AUTHFLOW_PIDFILE_REDIS"; }
redis_answers() { [[ $(timeout 2 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }
port_refuses() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A process that exited but was not reaped is gone too.
pid_alive() {
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ $st != Z* ]]
}

# redis_save_command PID: writes the command line that starts this Redis
# again, and the user it runs as, to $BATS_FILE_TMPDIR. Redis rewrites its
# process title, so /proc/PID/cmdline holds only "redis-server 127.0.0.1:PORT":
# the settings come from CONFIG GET instead.
redis_save_command() {
    local pid=$1 k v exe
    local -A conf=()
    while IFS= read -r k && IFS= read -r v; do
        conf[$k]=$v
    done < <(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" CONFIG GET '*')
    [[ -n ${conf[port]:-} && -n ${conf[pidfile]:-} ]] || fail "CONFIG GET of Redis failed"
    exe=$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n 1)
    exe=${exe%% *}
    local -a cmd=("${exe:-redis-server}" --port "${conf[port]}" --save "${conf[save]}"
        --appendonly "${conf[appendonly]}" --dir "${conf[dir]}" --daemonize yes
        --pidfile "${conf[pidfile]}" --logfile "${conf[logfile]}")
    local -a binds
    read -ra binds <<<"${conf[bind]}"
    ((${#binds[@]} == 0)) || cmd+=(--bind "${binds[@]}")
    [[ -z ${conf[unixsocket]} ]] ||
        cmd+=(--unixsocket "${conf[unixsocket]}" --unixsocketperm "${conf[unixsocketperm]}")
    [[ -z ${conf[requirepass]:-} ]] || cmd+=(--requirepass "${conf[requirepass]}")
    printf '%s\0' "${cmd[@]}" >"$BATS_FILE_TMPDIR/redis-cmd"
    ps -o user= -p "$pid" | tr -d ' ' >"$BATS_FILE_TMPDIR/redis-user"
    UNIX_SOCKET=${conf[unixsocket]}
}

# redis_kill: stops the stack's Redis (SIGTERM) and waits until it is gone.
redis_kill() {
    local pid i
    pid=$(redis_pid)
    redis_save_command "$pid"
    touch "$BATS_FILE_TMPDIR/redis-down"
    kill "$pid"
    for ((i = 0; i < 100; i++)); do
        port_refuses "$REDIS_PORT" && ! pid_alive "$pid" && return 0
        sleep 0.1
    done
    fail "Redis (pid $pid) still runs 10 s after SIGTERM"
}

# redis_start: starts Redis again with the command line redis_kill saved, as
# the user it ran as (it daemonizes, so no descriptor of bats may leak to it).
redis_start() {
    local -a cmd
    local user i
    mapfile -d '' -t cmd <"$BATS_FILE_TMPDIR/redis-cmd"
    user=$(<"$BATS_FILE_TMPDIR/redis-user")
    (
        for fd in /proc/"$BASHPID"/fd/*; do
            fd=${fd##*/}
            if ((fd > 2 && fd < 255)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        if [[ $(id -u) == 0 && -n $user && $user != root ]]; then
            exec runuser -u "$user" -- "${cmd[@]}"
        fi
        exec "${cmd[@]}"
    ) </dev/null >/dev/null 2>&1 || fail "redis-server did not start: ${cmd[*]}"
    for ((i = 0; i < 100; i++)); do
        if redis_answers && [[ -z ${UNIX_SOCKET:-} || -S $UNIX_SOCKET ]]; then
            rm -f "$BATS_FILE_TMPDIR/redis-down"
            return 0
        fi
        sleep 0.1
    done
    fail "Redis did not answer within 10 s of its restart"
}

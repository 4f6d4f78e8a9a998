# sandlot's Bash driver: one long-lived interactive bash per code context.
#
# bash runs as `bash --norc --noprofile --noediting -i` with the host's
# request pipe on fd 0, so bash itself reads the requests: the host first
# writes this file, then one request per cell, a single command line (the
# "bash dialect" of protocol.rs):
#   __sandlot_cell <id> $'<code>' [<name> $'<value>']... && eval "$__sandlot_run" ...
# `__sandlot_cell` keeps the code and builds the command that runs it with
# the cell's variables; the rest of the line then runs it at the shell's top
# level (not in a function: `declare` behaves as typed at a prompt). bash
# buffers what it reads from fd 0, so nothing of a request may be read by
# anything but bash's own parser. Messages go out on fd 4; the cell's stdout
# and stderr are fds 1 and 2.
#
# Why interactive: on SIGINT an interactive shell abandons the whole command
# line (loops and functions included) and goes back to reading the next one,
# keeping its variables, functions, cwd and options, as a terminal does.
# PROMPT_COMMAND then reports the end of the cell with its status.
PS1= PS2= PS4='+ '
set +H +m +o history
unset HISTFILE
exec {__sandlot_msg}>&4 4>&-
__sandlot_id=
__sandlot_count=0

__sandlot_send() {
	local LC_ALL=C
	printf '%d\n%s' "${#1}" "$1" >&"$__sandlot_msg"
}

# Keeps one cell's code and leaves in __sandlot_run the command that runs it
# with the cell's variables set for that command only.
__sandlot_cell() {
	local id=$1 assign= v
	__sandlot_code=$2
	shift 2
	while (($# >= 2)); do
		printf -v v '%q' "$2"
		assign+="$1=$v "
		shift 2
	done
	__sandlot_run="$assign eval \"\$__sandlot_code\""
	__sandlot_id=$id
	((__sandlot_count++))
	__sandlot_send "{\"type\":\"start\",\"id\":$id,\"execution_count\":$__sandlot_count}"
}

__sandlot_done() {
	local status=$?
	if [[ -n $__sandlot_id ]]; then
		__sandlot_send "{\"type\":\"done\",\"id\":$__sandlot_id,\"status\":$status,\"execution_count\":$__sandlot_count}"
		__sandlot_id=
	fi
}
PROMPT_COMMAND=__sandlot_done
readonly PROMPT_COMMAND
readonly -f __sandlot_send __sandlot_cell __sandlot_done
__sandlot_send "{\"type\":\"ready\",\"protocol\":1,\"language\":\"bash\",\"version\":\"$BASH_VERSION\"}"

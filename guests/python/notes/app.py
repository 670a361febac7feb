"""notes: a small shell (world `shell`) with four commands: echo, count, upper, recent."""
# cannon-world: shell
# cannon-allow: streams
from cannon_guest import Fail, Shell, StreamsError, streams

shell = Shell()


@shell.command("echo", summary="Repeat the text", usage="echo TEXT...  - replies with TEXT as given")
def echo(args, msg):
    return " ".join(args)


@shell.command("count", summary="Count words and characters",
               usage="count WORDS...  - replies 'N words, M chars' for the words given")
def count(args, msg):
    text = " ".join(args)
    return f"{len(args)} words, {len(text)} chars"


@shell.command("upper", summary="Upper-case the text", usage="upper TEXT  - replies with TEXT in capitals")
def upper(args, msg):
    return " ".join(args).upper()


@shell.command("recent", summary="A service's last replies",
               usage="recent SERVICE [N]  - the text of SERVICE's last N replies (default 3, at most 20), "
                     "oldest first (needs allow: [{streams: [SERVICE]}])")
def recent(args, msg):
    if not 1 <= len(args) <= 2 or (len(args) == 2 and not args[1].isdigit()):
        raise Fail("usage: recent SERVICE [N]")
    service, n = args[0], min(int(args[1]) if len(args) == 2 else 3, 20)
    try:
        page = streams.last(service, "taskback", max(n, 1))
    except StreamsError as e:
        if e.kind == "unavailable":
            raise  # fails the call: the message is retried
        return f"cannot read {service}: {e.kind}"
    return "\n".join(e.get("text", "") for e in page.entries) or f"{service} has not replied yet"

"""notes: a small shell (world `shell`) with three commands: echo, count, upper."""
# cannon-world: shell
from cannon_guest import Shell

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

using Harness.Cli;

// The `harness` command: thin. Each subcommand lives in Commands/<Name>Command.cs, parses its
// arguments, calls a library and renders; it returns the process exit code (0 ok, 2 user error).
return CommandTable.Dispatch(args);

using Harness.Cli;
using Harness.Cli.Output;

// The `harness` command: thin. Each subcommand lives in Commands/<Name>Command.cs, parses its
// arguments, calls a library and renders; it returns the process exit code (0 ok, 2 user error).
PlotFonts.UseBundled();
return CommandTable.Dispatch(args);

namespace Harness.Executor.Distributed;

/// <summary>A collective failed, timed out, or was aborted because another rank failed; the message names the rank, group and call.</summary>
public sealed class CommunicatorException(string message, Exception? inner = null) : Exception(message, inner);

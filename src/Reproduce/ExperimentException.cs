namespace Harness.Reproduce;

/// <summary>A malformed or unknown experiment: the message is one sentence naming the offending value.</summary>
public sealed class ExperimentException(string message) : Exception(message);

using Harness.Simulator.Specs;

namespace Harness.Tests.Parallel;

public class TensorParallelTests
{
    private static RunDescription Tp(int t, bool sp = false, double p = 1.0) =>
        new(TensorParallel: t, SequenceParallel: sp, SyncFactor: p, MicroBatch: 2, GlobalBatch: 2, Precision: Precision.Fp32);

    [Fact]
    public void Tp2LlamaMatchesSerial() => ParallelRun.AssertMatchesSerial(Reference.Llama(), Tp(2));

    [Fact]
    public void Tp4GptMatchesSerial() => ParallelRun.AssertMatchesSerial(Reference.Gpt(), Tp(4));

    [Fact]
    public void Tp4LlamaMatchesSerial() => ParallelRun.AssertMatchesSerial(Reference.Llama(), Tp(4));

    [Fact]
    public void SequenceParallelTp2MatchesSerial()
    {
        ParallelRun.AssertMatchesSerial(Reference.Llama(), Tp(2, sp: true));
        ParallelRun.AssertMatchesSerial(Reference.Gpt(), Tp(2, sp: true));
    }
}

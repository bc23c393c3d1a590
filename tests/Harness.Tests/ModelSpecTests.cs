using Harness.Simulator.Specs;

namespace Harness.Tests;

public class ModelSpecTests
{
    [Fact]
    public void Llama7bHasItsPublishedParameterCount()
    {
        // Llama-7B: 32 x (4·4096² + 3·4096·11008 + 2·4096) + 2·32004·4096 + 4096 = 6.74e9.
        var m = ModelPresets.All["llama-7b"];
        Assert.Equal(32L * (4L * 4096 * 4096 + 3L * 4096 * 11008 + 2 * 4096) + 2L * 32004 * 4096 + 4096, m.TotalParameters);
    }
}

using Harness.Simulator.Specs;

namespace Harness.Tests;

public class SpecJsonTests
{
    [Fact]
    public void ModelsAndClustersRoundTrip()
    {
        var model = ModelPresets.All["llama2-70b"];
        Assert.Equal(model, SpecJson.ParseModel(SpecJson.Write(model), "test"));
        var cluster = ClusterSpec.Of(GpuPresets.All["h800"], 256);
        Assert.Equal(cluster, SpecJson.ParseCluster(SpecJson.Write(cluster), "test"));
    }

    [Fact]
    public void FilesUseMegatronNamesInSnakeCase()
    {
        string json = SpecJson.Write(ModelPresets.All["llama-7b"]);
        Assert.Contains("\"num_layers\": 32", json);
        Assert.Contains("\"ffn_hidden_size\": 11008", json);
        Assert.Contains("\"activation\": \"swi_glu\"", json);
    }

    [Fact]
    public void AMissingFieldIsAnErrorNotADefault()
    {
        string json = SpecJson.Write(ModelPresets.All["llama-7b"]).Replace("\"num_layers\": 32,", "");
        var e = Assert.Throws<SpecFileException>(() => SpecJson.ParseModel(json, "my.json"));
        Assert.Contains("my.json", e.Message);
        Assert.Contains("num_layers", e.Message);
    }

    [Theory]
    [InlineData("{bad", "my.json (line 1): 'b' is an invalid start of a property name.")]
    [InlineData("[1, 2]", "my.json (line 1): The JSON value could not be converted to ModelSpec.")]
    [InlineData("{\"num_layers\": \"x\"}", "my.json (line 1, at $.num_layers): The JSON value could not be converted to")]
    public void AMalformedFileIsOneSentenceWithoutTheReadersInternals(string json, string start)
    {
        var e = Assert.Throws<SpecFileException>(() => SpecJson.ParseModel(json, "my.json"));
        Assert.StartsWith(start, e.Message);
        Assert.DoesNotContain("Path:", e.Message);
        Assert.DoesNotContain("Harness.", e.Message);
    }

    [Fact]
    public void AnUnknownFieldIsAnError()
    {
        string json = SpecJson.Write(ModelPresets.All["llama-7b"]).Replace("\"num_layers\"", "\"num_layer\"");
        var e = Assert.Throws<SpecFileException>(() => SpecJson.ParseModel(json, "my.json"));
        Assert.Contains("num_layer", e.Message);
    }

    [Fact]
    public void AnUnknownEnumValueListsTheValidOnes()
    {
        string json = SpecJson.Write(ModelPresets.All["llama-7b"]).Replace("\"swi_glu\"", "\"relu2\"");
        var e = Assert.Throws<SpecFileException>(() => SpecJson.ParseModel(json, "my.json"));
        Assert.EndsWith("Valid activation values: gelu, swi_glu.", e.Message);
    }

    [Fact]
    public void AnInvalidModelIsRejectedWithItsReason()
    {
        string json = SpecJson.Write(ModelPresets.All["llama-7b"]).Replace("\"num_attention_heads\": 32", "\"num_attention_heads\": 30");
        var e = Assert.Throws<SpecFileException>(() => SpecJson.ParseModel(json, "my.json"));
        Assert.Contains("--hidden-size 4096 is not divisible by --num-attention-heads 30", e.Message);
    }

    [Fact]
    public void ANonPositiveBandwidthIsRejected()
    {
        var cluster = ClusterSpec.Of(GpuPresets.All["h800"], 8);
        string json = SpecJson.Write(cluster with { Gpu = cluster.Gpu with { HbmBandwidthBytesPerSecond = 0 } });
        var e = Assert.Throws<SpecFileException>(() => SpecJson.ParseCluster(json, "c.json"));
        Assert.Contains("gpu.hbm_bandwidth_bytes_per_second is 0", e.Message);
    }
}

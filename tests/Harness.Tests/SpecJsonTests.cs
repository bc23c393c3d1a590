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
    [InlineData("", "my.json (line 1): the file holds no JSON.")]
    [InlineData("{\"num_layers\": 2, ", "my.json (line 1): Expected start of a property name or value, but instead reached end of data.")]
    [InlineData("[1, 2]", "my.json (line 1): the file must hold one JSON object.")]
    [InlineData("{\"num_layers\": \"x\"}", "my.json (line 1, at $.num_layers): num_layers takes an integer up to 2147483647.")]
    [InlineData("{\"num_layers\": 99999999999999}", "my.json (line 1, at $.num_layers): num_layers takes an integer up to 2147483647.")]
    [InlineData("{\"norm_epsilon\": true}", "my.json (line 1, at $.norm_epsilon): norm_epsilon takes a number.")]
    [InlineData("{\"layers\": 2}", "my.json (line 1, at $.layers): 'layers' is not a field here; check its spelling.")]
    [InlineData("{\"name\": null}", "my.json (line 1, at $.name): name must not be null.")]
    [InlineData("{}", "my.json (line 1): required fields are missing: 'name', 'num_layers', 'hidden_size', 'num_attention_heads', 'num_query_groups'.")]
    public void AMalformedFileIsOneSentenceWithoutTheReadersInternals(string json, string sentence)
    {
        var e = Assert.Throws<SpecFileException>(() => SpecJson.ParseModel(json, "my.json"));
        Assert.Equal(sentence, e.Message);
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
        Assert.EndsWith("(line 10, at $.activation): activation takes one of gelu, swi_glu.", e.Message);
    }

    [Fact]
    public void AnInvalidModelIsRejectedWithItsReason()
    {
        string json = SpecJson.Write(ModelPresets.All["llama-7b"]).Replace("\"num_attention_heads\": 32", "\"num_attention_heads\": 30");
        var e = Assert.Throws<SpecFileException>(() => SpecJson.ParseModel(json, "my.json"));
        Assert.Contains("--hidden-size 4096 is not divisible by --num-attention-heads 30", e.Message);
    }

    [Fact]
    public void AttentionsLengthAndDropoutRatesAreCheckedAndOptional()
    {
        var cluster = ClusterSpec.Of(GpuPresets.All["h200"], 8);
        var e = cluster.Gpu.Efficiency;
        string json = SpecJson.Write(cluster with { Gpu = cluster.Gpu with { Efficiency = e with { DropoutDrawsPerSecond = 0 } } });
        Assert.Contains("gpu.efficiency.dropout_draws_per_second is 0", Assert.Throws<SpecFileException>(() => SpecJson.ParseCluster(json, "c.json")).Message);
        json = SpecJson.Write(cluster with { Gpu = cluster.Gpu with { Efficiency = e with { AttentionHalfKeys = -1 } } });
        Assert.Contains("gpu.efficiency.attention_half_keys is -1", Assert.Throws<SpecFileException>(() => SpecJson.ParseCluster(json, "c.json")).Message);
        // A file written before they existed reads as a GPU that charges neither (no measurement of its own).
        json = SpecJson.Write(cluster).Replace(",\n      \"dropout_draws_per_second\": 1580000000000", "")
            .Replace(",\n      \"attention_half_keys\": 1000", "");
        Assert.DoesNotContain("attention_half_keys", json);
        var old = SpecJson.ParseCluster(json, "old.json").Gpu.Efficiency;
        Assert.Equal((null, 0.0), (old.DropoutDrawsPerSecond, old.AttentionHalfKeys));
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

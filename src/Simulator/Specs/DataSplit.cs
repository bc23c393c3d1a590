using System.Globalization;
using System.Text.RegularExpressions;

namespace Harness.Simulator.Specs;

/// <summary>
/// Megatron-LM's --split: the relative weights of the training, validation and test shares of a dataset's documents
/// ("969,30,1", "98/2/0"; missing weights are 0). Megatron normalizes them to sum to one and cuts the documents at the
/// book-ends of their running sums (megatron/core/datasets/utils.py parse_and_normalize_split,
/// blended_megatron_dataset_config.py convert_split_vector_to_split_matrix, megatron_dataset.py: documents
/// [round(start·D), round(end·D)) of D): each share is a contiguous run of whole documents, and a share of weight 0 is empty.
/// </summary>
public sealed partial record DataSplit(double Train, double Valid, double Test)
{
    public enum Share { Train, Valid, Test }

    [GeneratedRegex(@"[.0-9]+")]
    private static partial Regex Number();

    /// <summary>Megatron's reading: every number in the text, in order, zeros for the missing; null when it holds none or more than three.</summary>
    public static DataSplit? Parse(string text)
    {
        var numbers = Number().Matches(text).Select(m => double.TryParse(m.Value, NumberStyles.Float, CultureInfo.InvariantCulture, out var x) ? x : double.NaN).ToList();
        if (numbers.Count is 0 or > 3 || numbers.Any(double.IsNaN)) return null;
        while (numbers.Count < 3) numbers.Add(0);
        return new DataSplit(numbers[0], numbers[1], numbers[2]);
    }

    public override string ToString() => string.Join(',', new[] { Train, Valid, Test }.Select(x => x.ToString("R", CultureInfo.InvariantCulture)));

    public double Weight(Share share) => share switch { Share.Train => Train, Share.Valid => Valid, _ => Test };

    /// <summary>Why these weights are not a split (one sentence), or null.</summary>
    public string? Problem =>
        new[] { Train, Valid, Test }.Any(x => !double.IsFinite(x) || x < 0) || Train + Valid + Test <= 0
            ? $"--split {this} is not three weights of at least 0 with a positive sum (e.g. 969,30,1)."
            : Train <= 0 ? $"--split {this} leaves no documents to train on; give the first share a positive weight." : null;

    /// <summary>The documents [first, end) of <paramref name="documents"/> that <paramref name="share"/> holds, as Megatron cuts them.</summary>
    public (long First, long End) Documents(Share share, long documents)
    {
        if (Weight(share) == 0) return (0, 0);
        double sum = Train + Valid + Test, start = 0;
        // The book-ends are the running sums of the normalized weights.
        for (var s = Share.Train; s < share; s++) start += Weight(s) / sum;
        double end = start + Weight(share) / sum;
        // Python's round(), half to even, as Math.Round's default.
        return ((long)Math.Round(start * documents), (long)Math.Round(end * documents));
    }
}

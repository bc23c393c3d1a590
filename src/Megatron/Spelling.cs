namespace Harness.Megatron;

/// <summary>The closest spelling of a flag among those a command knows: the suggestion of "did you mean ...?".</summary>
public static class Spelling
{
    /// <summary>The candidate at the smallest edit distance from <paramref name="name"/>, when that distance is small
    /// enough to be a slip (at most a third of the name's length, and at most 4 edits); null otherwise.</summary>
    public static string? Closest(string name, IEnumerable<string> candidates)
    {
        string? best = null;
        int bestDistance = int.MaxValue;
        foreach (var c in candidates)
        {
            int d = Distance(name, c);
            if (d < bestDistance) (best, bestDistance) = (c, d);
        }
        return bestDistance <= Math.Min(4, Math.Max(1, name.Length / 3)) ? best : null;
    }

    /// <summary>Levenshtein distance: insertions, deletions and substitutions of one character each cost 1.</summary>
    public static int Distance(string a, string b)
    {
        var previous = new int[b.Length + 1];
        var current = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++) previous[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (int j = 1; j <= b.Length; j++)
                current[j] = Math.Min(Math.Min(current[j - 1], previous[j]) + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            (previous, current) = (current, previous);
        }
        return previous[b.Length];
    }
}

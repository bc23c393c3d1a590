namespace Harness.Search;

/// <summary>The divisors of a size, ascending, found up to its square root: a world size of 2^31 − 1 GPUs takes 46341
/// trials, not two billion.</summary>
public static class Divisors
{
    public static IEnumerable<int> Of(int n)
    {
        var large = new Stack<int>();
        for (int d = 1; (long)d * d <= n; d++)
        {
            if (n % d != 0) continue;
            yield return d;
            if (d != n / d) large.Push(n / d);
        }
        while (large.Count > 0) yield return large.Pop();
    }
}

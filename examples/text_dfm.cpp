// text_dfm: a character-level masked diffusion language model hosted by libtorch, trained and
// sampled through libdfm, next to the autoregressive transformer a user would pick instead.
//
// Data: the English text of Debian's `fortunes` package (/usr/share/games/fortunes, pictures
// left out), each fortune's whitespace collapsed to single spaces, one fortune per line; every
// tenth fortune (index % 10 == 9) is held out. Tokens: the characters of the training text plus
// a mask token (the AR model's start token).
// Model: a bidirectional transformer (pre-LayerNorm blocks, learned positions, optional time
// conditioning) written with libtorch's C++ modules, Adam from libtorch. The same network with a
// causal mask is the autoregressive (AR) baseline; both are trained for the same wall time,
// one step each in turn, so both see the same load on a shared machine.
// Flow: a mixture path from the all-mask source with kappa_t = t. dfm_trainer_step draws t and
// x_t and evaluates the generalized-KL loss (the ELBO) or the cross-entropy of the masked
// characters, and hands its gradient wrt the logits to the program, which calls
// logits.backward(grad). Tensors and libdfm share memory: the network reads x_t where libdfm
// wrote it, its last layer writes the logits straight into libdfm's output buffer (LinearInto
// below), and the gradient is wrapped in place (see docs/examples_text.md for the one copy left).
// Report: held-out negative ELBO in bits per character (dfm_loss_discrete_elbo) against the AR
// model's bits per character; samples (unconditional at several model-call budgets, and infilled
// between a fixed prefix and suffix), the rate of their words found in the dictionary
// (/usr/share/dict/words) and distinct-n, for the flow, the AR model and the held-out text; the
// share of a training step and of a sampling step spent inside libdfm.
//
// Usage: text_dfm [--quick] [options] (--help lists them). See docs/examples_text.md.
#include <dfm/dfm.hpp>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

namespace {

const char *prog = "text_dfm";

double now()
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

double loadavg()
{
    double l = -1.0;
    FILE *f = std::fopen("/proc/loadavg", "r");
    if (f) {
        if (std::fscanf(f, "%lf", &l) != 1) l = -1.0;
        std::fclose(f);
    }
    return l;
}

[[noreturn]] void die(const std::string &msg, int code = 1)
{
    std::fprintf(stderr, "%s: %s\n", prog, msg.c_str());
    std::exit(code);
}

// ---- options ----

struct Options {
    bool quick = false;
    std::string corpus = "/usr/share/games/fortunes", dict = "/usr/share/dict/words";
    long seq_len = 128, width = 128, layers = 4, heads = 4, batch = 32, threads = 2, seed = 1;
    long samples = 24, eval_windows = 128, elbo_times = 8, log_every = 20;
    double lr = 3e-3, train_seconds = 210.0, eps = 1e-3;
    int time_cond = 0, loss = 0; // loss 0: generalized KL (the ELBO), 1: cross-entropy
    int bf16 = -1;               // -1: when the CPU has bfloat16 instructions
    std::vector<long> budgets = {16, 32, 128};
    long infill_steps = 64;
};

void usage(FILE *f)
{
    std::fprintf(f,
        "usage: text_dfm [options]\n"
        "  --quick              a short run (CI): 30 s of training per model, fewer samples\n"
        "  --train-seconds S    wall time of training per model (default 210; quick 30)\n"
        "  --corpus DIR         fortune files (default /usr/share/games/fortunes)\n"
        "  --dict PATH          dictionary for the valid-word rate (default /usr/share/dict/words)\n"
        "  --seq-len L          characters per sequence, 8..512 (default 128)\n"
        "  --width D            transformer width (default 128)\n"
        "  --layers N           transformer blocks (default 4)\n"
        "  --heads H            attention heads, dividing the width (default 4)\n"
        "  --time-cond 0|1      condition the flow's network on t (default 0: time-independent,\n"
        "                       as MDLM; the mask count tells the network how far t is)\n"
        "  --loss gkl|ce        generalized KL = the ELBO (default) or cross-entropy of the\n"
        "                       masked characters\n"
        "  --batch B            sequences per training step (default 32)\n"
        "  --lr LR              Adam learning rate, warmed up, then decayed to 0 over the\n"
        "                       training time (default 3e-3)\n"
        "  --eps E              training times on [0, 1 - E] (default 1e-3)\n"
        "  --samples N          samples per sampler setting (default 24; quick 8)\n"
        "  --budgets K,K,...    model-call budgets (sampler steps) of the flow's exact step; the\n"
        "                       other samplers run at the one nearest a quarter of the largest\n"
        "                       and at the largest (default 16,32,128; quick 16,64)\n"
        "  --eval-windows N     held-out sequences scored (default 128; quick 32)\n"
        "  --elbo-times N       times per sequence of the ELBO estimate (default 8; quick 4)\n"
        "  --bf16 auto|0|1      bfloat16 autocast for the matrix products (default auto: on\n"
        "                       when the CPU has avx512_bf16 or AMX)\n"
        "  --threads T          torch threads (default 2)\n"
        "  --seed S             seed of everything random (default 1)\n"
        "  --log-every N        print the losses every N steps (default 20)\n");
}

bool match(int argc, char **argv, int &i, const char *name, std::string &value)
{
    size_t n = std::strlen(name);
    if (std::strncmp(argv[i], name, n) != 0) return false;
    if (argv[i][n] == '=') {
        value = argv[i] + n + 1;
        return true;
    }
    if (argv[i][n] != '\0') return false;
    if (i + 1 >= argc) die(std::string("option ") + name + " needs a value", 2);
    value = argv[++i];
    return true;
}

long parse_long(const char *name, const std::string &s, long lo, long hi)
{
    char *end = nullptr;
    errno = 0;
    long v = std::strtol(s.c_str(), &end, 10);
    if (s.empty() || *end || errno == ERANGE) die(std::string(name) + ": '" + s + "' is not an integer", 2);
    if (v < lo || v > hi)
        die(std::string(name) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                "], got " + s, 2);
    return v;
}

double parse_double(const char *name, const std::string &s, double lo, double hi)
{
    char *end = nullptr;
    errno = 0;
    double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end || errno == ERANGE || !std::isfinite(v))
        die(std::string(name) + ": '" + s + "' is not a finite number", 2);
    if (v < lo || v > hi) {
        char b[160];
        std::snprintf(b, sizeof b, "%s must be in [%g, %g], got %s", name, lo, hi, s.c_str());
        die(b, 2);
    }
    return v;
}

int parse_choice(const char *name, const std::string &s, const std::vector<std::string> &c)
{
    for (size_t k = 0; k < c.size(); k++)
        if (s == c[k]) return (int)k;
    std::string all;
    for (auto &x : c) all += " " + x;
    die(std::string(name) + " must be one of" + all + ", got '" + s + "'", 2);
}

std::vector<long> parse_list(const char *name, const std::string &s)
{
    std::vector<long> v;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) v.push_back(parse_long(name, item, 1, 100000));
    if (v.empty()) die(std::string(name) + " needs at least one value", 2);
    return v;
}

Options parse_options(int argc, char **argv)
{
    Options o;
    for (int i = 1; i < argc; i++)
        if (!std::strcmp(argv[i], "--quick")) {
            o.quick = true;
            o.train_seconds = 30.0;
            o.samples = 8;
            o.budgets = {16, 64};
            o.eval_windows = 32;
            o.elbo_times = 4;
        }
    for (int i = 1; i < argc; i++) {
        std::string v;
        const char *a = argv[i];
        if (!std::strcmp(a, "--help") || !std::strcmp(a, "-h")) { usage(stdout); std::exit(0); }
        if (!std::strcmp(a, "--quick")) continue;
        if (match(argc, argv, i, "--train-seconds", v)) o.train_seconds = parse_double(a, v, 1.0, 1e6);
        else if (match(argc, argv, i, "--corpus", v)) o.corpus = v;
        else if (match(argc, argv, i, "--dict", v)) o.dict = v;
        else if (match(argc, argv, i, "--seq-len", v)) o.seq_len = parse_long("--seq-len", v, 8, 512);
        else if (match(argc, argv, i, "--width", v)) o.width = parse_long("--width", v, 8, 2048);
        else if (match(argc, argv, i, "--layers", v)) o.layers = parse_long("--layers", v, 1, 64);
        else if (match(argc, argv, i, "--heads", v)) o.heads = parse_long("--heads", v, 1, 64);
        else if (match(argc, argv, i, "--time-cond", v)) o.time_cond = parse_choice("--time-cond", v, {"0", "1"});
        else if (match(argc, argv, i, "--loss", v)) o.loss = parse_choice("--loss", v, {"gkl", "ce"});
        else if (match(argc, argv, i, "--batch", v)) o.batch = parse_long("--batch", v, 1, 4096);
        else if (match(argc, argv, i, "--lr", v)) o.lr = parse_double("--lr", v, 1e-7, 1.0);
        else if (match(argc, argv, i, "--eps", v)) o.eps = parse_double("--eps", v, 1e-6, 0.5);
        else if (match(argc, argv, i, "--samples", v)) o.samples = parse_long("--samples", v, 1, 100000);
        else if (match(argc, argv, i, "--budgets", v)) o.budgets = parse_list("--budgets", v);
        else if (match(argc, argv, i, "--eval-windows", v)) o.eval_windows = parse_long("--eval-windows", v, 1, 1000000);
        else if (match(argc, argv, i, "--elbo-times", v)) o.elbo_times = parse_long("--elbo-times", v, 1, 1024);
        else if (match(argc, argv, i, "--bf16", v)) o.bf16 = parse_choice("--bf16", v, {"0", "1", "auto"});
        else if (match(argc, argv, i, "--threads", v)) o.threads = parse_long("--threads", v, 1, 256);
        else if (match(argc, argv, i, "--seed", v)) o.seed = parse_long("--seed", v, 0, 1L << 62);
        else if (match(argc, argv, i, "--log-every", v)) o.log_every = parse_long("--log-every", v, 1, 1000000);
        else die(std::string("unknown argument '") + a + "' (try --help)", 2);
    }
    if (o.width % o.heads) die("--heads must divide --width", 2);
    if (o.bf16 == 2) o.bf16 = -1;
    o.infill_steps = o.budgets.back() < o.seq_len / 2 ? o.budgets.back() : o.seq_len / 2;
    return o;
}

// ---- the corpus ----

struct Corpus {
    std::string train, held;      // fortunes separated by '\n'
    std::string chars;            // token k is chars[k]; the mask token is chars.size()
    int tok_of[256];
    int V = 0, MASK = 0;          // V = characters + the mask
    std::vector<int32_t> train_tok, held_tok;
    size_t fortunes = 0, held_fortunes = 0, files = 0, dropped = 0;
};

// One fortune: overstrikes (c \b c) resolved, tabs and line breaks turned into spaces, bytes
// outside printable ASCII dropped (a few UTF-8 letters), runs of spaces collapsed, trimmed.
std::string normalize(const std::string &raw)
{
    std::string s;
    for (unsigned char c : raw) {
        if (c == '\b') {
            if (!s.empty()) s.pop_back();
            continue;
        }
        if (c == '\t' || c == '\n' || c == '\r') c = ' ';
        if (c < 32 || c > 126) continue;
        if (c == ' ' && (s.empty() || s.back() == ' ')) continue;
        s.push_back((char)c);
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s;
}

// The fortune files of dir (sorted by name): names without a dot, pictures left out.
std::vector<std::string> fortune_files(const std::string &dir)
{
    DIR *d = opendir(dir.c_str());
    if (!d)
        die("cannot open the corpus '" + dir + "': " + std::strerror(errno) +
            (errno == ENOENT ? " (install Debian's fortunes: make deps-torch, or pass --corpus)" : ""));
    std::vector<std::string> names;
    while (struct dirent *e = readdir(d)) {
        std::string n = e->d_name;
        if (n.find('.') != std::string::npos || n == "art" || n == "ascii-art") continue;
        names.push_back(n);
    }
    closedir(d);
    std::sort(names.begin(), names.end());
    return names;
}

void split_fortunes(const std::string &text, Corpus &c)
{
    std::stringstream ss(text);
    std::string line, cur;
    auto flush = [&]() {
        std::string f = normalize(cur);
        cur.clear();
        if (f.empty()) return;
        bool held = c.fortunes % 10 == 9;
        std::string &dst = held ? c.held : c.train;
        dst += f;
        dst += '\n';
        c.fortunes++;
        c.held_fortunes += held;
    };
    while (std::getline(ss, line)) {
        if (line == "%") flush();
        else cur += line + "\n";
    }
    flush();
}

Corpus load_corpus(const std::string &dir)
{
    Corpus c;
    for (const std::string &n : fortune_files(dir)) {
        std::ifstream f(dir + "/" + n, std::ios::binary);
        if (!f) continue; // a subdirectory or an unreadable file
        std::stringstream ss;
        ss << f.rdbuf();
        split_fortunes(ss.str(), c);
        c.files++;
    }
    if (c.train.size() < 10000 || c.held.size() < 2000)
        die("the corpus '" + dir + "' holds too little text (" + std::to_string(c.train.size()) +
            " characters)");
    std::set<char> cs(c.train.begin(), c.train.end());
    c.chars.assign(cs.begin(), cs.end());
    std::fill(c.tok_of, c.tok_of + 256, -1);
    for (size_t k = 0; k < c.chars.size(); k++) c.tok_of[(unsigned char)c.chars[k]] = (int)k;
    c.MASK = (int)c.chars.size();
    c.V = c.MASK + 1;
    for (char ch : c.train) c.train_tok.push_back(c.tok_of[(unsigned char)ch]);
    for (char ch : c.held) {
        int k = c.tok_of[(unsigned char)ch];
        if (k < 0) c.dropped++;
        else c.held_tok.push_back(k);
    }
    return c;
}

std::string decode(const Corpus &c, const int32_t *tok, size_t n, char mask_char = '_')
{
    std::string s;
    for (size_t i = 0; i < n; i++) {
        int k = tok[i];
        char ch = k >= 0 && k < c.MASK ? c.chars[(size_t)k] : mask_char;
        s.push_back(ch == '\n' ? '|' : ch); // fortunes end with a line break: shown as |
    }
    return s;
}

// ---- words: valid-word rate and distinct-n ----

struct Dictionary {
    std::unordered_set<std::string> words;
};

Dictionary load_dictionary(const std::string &path)
{
    std::ifstream f(path);
    if (!f)
        die("cannot open the dictionary '" + path + "' (install Debian's wamerican, or pass --dict)");
    Dictionary d;
    std::string w;
    while (std::getline(f, w))
        if (!w.empty()) d.words.insert(w);
    if (d.words.size() < 1000) die("the dictionary '" + path + "' holds too few words");
    return d;
}

// A word is valid when the dictionary holds it as written, or in lower case when it is written
// capitalized ("The") or in capitals ("THE", also matching "Texas" for "TEXAS"). Single letters
// count only as "a", "A" and "I": the dictionary lists every letter of the alphabet, and random
// characters would otherwise often make one-letter "words".
bool valid_word(const Dictionary &d, const std::string &w)
{
    if (w.size() == 1) return w == "a" || w == "A" || w == "I";
    if (d.words.count(w)) return true;
    bool upper0 = std::isupper((unsigned char)w[0]) != 0, rest_lower = true, rest_upper = true;
    for (size_t i = 1; i < w.size(); i++) {
        if (std::isupper((unsigned char)w[i])) rest_lower = false;
        if (std::islower((unsigned char)w[i])) rest_upper = false;
    }
    std::string lw = w, cap = w;
    for (char &ch : lw) ch = (char)std::tolower((unsigned char)ch);
    for (size_t i = 1; i < cap.size(); i++) cap[i] = (char)std::tolower((unsigned char)cap[i]);
    if (upper0 && rest_lower) return d.words.count(lw) != 0;
    if (upper0 && rest_upper) return d.words.count(lw) || d.words.count(cap);
    return false;
}

// The words of a text window: maximal runs of letters and apostrophes, apostrophes trimmed at
// both ends; the first and last run are left out when they touch the window's edge
// (they may be cut). Returns the sequence of words in order.
std::vector<std::string> window_words(const std::string &s)
{
    std::vector<std::string> out;
    size_t i = 0, n = s.size();
    while (i < n) {
        if (!std::isalpha((unsigned char)s[i]) && s[i] != '\'') { i++; continue; }
        size_t j = i;
        while (j < n && (std::isalpha((unsigned char)s[j]) || s[j] == '\'')) j++;
        bool cut = i == 0 || j == n;
        std::string w = s.substr(i, j - i);
        size_t a = w.find_first_not_of('\''), b = w.find_last_not_of('\'');
        if (!cut && a != std::string::npos) {
            out.push_back(w.substr(a, b - a + 1));
        }
        i = j;
    }
    return out;
}

struct TextStats {
    size_t words = 0, valid = 0;
    double valid_rate = 0.0, distinct[4] = {0, 0, 0, 0}; // distinct-1..3 at [1..3]
};

TextStats text_stats(const std::vector<std::string> &windows, const Dictionary &dict)
{
    TextStats st;
    std::set<std::vector<std::string>> grams[4];
    size_t total[4] = {0, 0, 0, 0};
    for (const std::string &s : windows) {
        std::vector<std::string> ws = window_words(s);
        for (std::string &w : ws) {
            st.valid += valid_word(dict, w);
            for (char &ch : w) ch = (char)std::tolower((unsigned char)ch); // n-grams ignore case
        }
        st.words += ws.size();
        for (size_t n = 1; n <= 3; n++)
            for (size_t k = 0; k + n <= ws.size(); k++) {
                grams[n].insert(std::vector<std::string>(ws.begin() + (long)k, ws.begin() + (long)(k + n)));
                total[n]++;
            }
    }
    st.valid_rate = st.words ? (double)st.valid / (double)st.words : 0.0;
    for (size_t n = 1; n <= 3; n++) st.distinct[n] = total[n] ? (double)grams[n].size() / (double)total[n] : 0.0;
    return st;
}

// ---- the transformer ----

struct BlockImpl : torch::nn::Module {
    int64_t heads;
    torch::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
    torch::nn::Linear qkv{nullptr}, proj{nullptr}, fc1{nullptr}, fc2{nullptr};
    BlockImpl(int64_t d, int64_t h) : heads(h)
    {
        ln1 = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
        ln2 = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
        qkv = register_module("qkv", torch::nn::Linear(d, 3 * d));
        proj = register_module("proj", torch::nn::Linear(d, d));
        fc1 = register_module("fc1", torch::nn::Linear(d, 4 * d));
        fc2 = register_module("fc2", torch::nn::Linear(4 * d, d));
    }
    // x: [N, L, d]; bias: [heads, L, L] added to the attention scores.
    torch::Tensor forward(torch::Tensor x, const torch::Tensor &bias)
    {
        const int64_t N = x.size(0), L = x.size(1), d = x.size(2), dh = d / heads;
        auto q = qkv(ln1(x)).view({N, L, 3, heads, dh}).permute({2, 0, 3, 1, 4});
        auto s = torch::matmul(q[0] * (1.0 / std::sqrt((double)dh)), q[1].transpose(-2, -1));
        s = s + bias;
        auto a = torch::matmul(torch::softmax(s, -1), q[2]).permute({0, 2, 1, 3}).reshape({N, L, d});
        x = x + proj(a);
        return x + fc2(torch::gelu(fc1(ln2(x))));
    }
};
TORCH_MODULE(Block);

// Token and position embeddings, a depthwise convolution over 5 neighbouring positions (causal:
// the 5 previous ones), optional time conditioning, blocks whose attention scores carry a
// distance penalty per head (ALiBi: -|i - j| / 2^(h+1), so some heads start local), final
// LayerNorm; the output layer's weights are kept here and applied by the caller (into libdfm's
// buffer, or plainly). Without the convolution and the penalty the masked model stayed at the
// unigram loss (4.68 bits per character) for its first 300 steps; with them it leaves it
// within 50 (measured on this data, batch 32 x 128).
struct TextNetImpl : torch::nn::Module {
    int64_t L, d, V;
    bool causal, time_cond;
    torch::nn::Embedding tok{nullptr};
    torch::nn::Conv1d conv{nullptr};
    torch::Tensor pos, head_w, head_b, bias;
    torch::nn::Linear time1{nullptr}, time2{nullptr};
    std::vector<Block> blocks;
    torch::nn::LayerNorm lnf{nullptr};

    TextNetImpl(int64_t vocab, int64_t len, int64_t width, int64_t layers, int64_t heads,
                bool is_causal, bool with_time)
        : L(len), d(width), V(vocab), causal(is_causal), time_cond(with_time)
    {
        tok = register_module("tok", torch::nn::Embedding(vocab, width));
        conv = register_module("conv", torch::nn::Conv1d(torch::nn::Conv1dOptions(width, width, 5).groups(width)));
        pos = register_parameter("pos", torch::randn({len, width}) * 0.02);
        if (time_cond) {
            time1 = register_module("time1", torch::nn::Linear(32, width));
            time2 = register_module("time2", torch::nn::Linear(width, width));
        }
        for (int64_t k = 0; k < layers; k++)
            blocks.push_back(register_module("block" + std::to_string(k), Block(width, heads)));
        lnf = register_module("lnf", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width})));
        head_w = register_parameter("head_w", torch::randn({vocab, width}) * 0.02);
        head_b = register_parameter("head_b", torch::zeros({vocab}));
        auto i = torch::arange(len, torch::kFloat);
        auto dist = (i.view({1, len}) - i.view({len, 1})).abs();
        auto slopes = torch::pow(2.0, -(torch::arange(heads, torch::kFloat) + 1.0));
        bias = -slopes.view({heads, 1, 1}) * dist.view({1, len, len});
        if (causal) bias = bias + torch::full({len, len}, -INFINITY).triu(1);
    }

    // tokens: [N, n] (n <= L, int32 or int64); t: [N] float times or undefined. Returns the
    // final features [N * n, d] in float (rows in token order).
    torch::Tensor features(const torch::Tensor &tokens, const torch::Tensor &t)
    {
        const int64_t N = tokens.size(0), n = tokens.size(1);
        auto x = tok(tokens) + pos.slice(0, 0, n);
        auto xc = torch::constant_pad_nd(x.transpose(1, 2), causal ? std::vector<int64_t>{4, 0}
                                                                   : std::vector<int64_t>{2, 2});
        x = x + conv(xc).transpose(1, 2);
        if (time_cond && t.defined()) {
            auto f = torch::arange(16, torch::kFloat).mul(-std::log(1000.0) / 16).exp();
            auto a = t.view({N, 1}) * 1000.0 * f.view({1, 16});
            auto e = time2(torch::silu(time1(torch::cat({a.sin(), a.cos()}, 1))));
            x = x + e.view({N, 1, d});
        }
        auto m = bias.slice(1, 0, n).slice(2, 0, n);
        for (auto &b : blocks) x = b->forward(x, m);
        return lnf(x).reshape({N * n, d}).to(torch::kFloat); // the output layer runs in float
    }
};
TORCH_MODULE(TextNet);

// bfloat16 autocast (matrix products in bfloat16, weights and the rest in float) while it lives,
// when enabled: on CPUs with bfloat16 instructions (avx512_bf16, AMX) it makes a training step
// about twice as fast. The cache of cast weights is cleared on exit, before Adam changes them.
bool use_bf16 = false;
struct Autocast {
    Autocast()
    {
        if (!use_bf16) return;
        at::autocast::set_autocast_cpu_dtype(torch::kBFloat16);
        at::autocast::set_cpu_enabled(true);
    }
    ~Autocast()
    {
        if (!use_bf16) return;
        at::autocast::set_cpu_enabled(false);
        at::autocast::clear_cache();
    }
};

bool cpu_has_bf16()
{
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line))
        if (line.compare(0, 5, "flags") == 0)
            return line.find(" avx512_bf16") != std::string::npos || line.find(" amx_bf16") != std::string::npos;
    return false;
}

// The output layer y = h W^T + b computed into memory the caller owns (libdfm's output buffer),
// with its own backward: the logits never live in a torch-allocated tensor, so libdfm reads
// what the network wrote and no copy is made.
struct LinearInto : torch::autograd::Function<LinearInto> {
    static torch::Tensor forward(torch::autograd::AutogradContext *ctx, torch::Tensor h,
                                 torch::Tensor w, torch::Tensor b, float *out)
    {
        auto y = torch::from_blob(out, {h.size(0), w.size(0)}, torch::kFloat);
        torch::addmm_out(y, b, h, w.t());
        ctx->save_for_backward({h, w});
        return y;
    }
    static torch::autograd::tensor_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::tensor_list g)
    {
        auto saved = ctx->get_saved_variables();
        const torch::Tensor &gy = g[0], &h = saved[0], &w = saved[1];
        return {gy.mm(w), gy.t().mm(h), gy.sum(0), torch::Tensor()};
    }
};

// ---- the flow's model callbacks ----

// With the mask source the posterior is known exactly at two places, written there instead of
// learned (MDLM's carry-over): the mask token never is data (logit -inf), and a revealed
// character stays until t = 1 (a point mass). libdfm's gradient at these entries is exactly 0,
// so writing them after the network (outside autograd) leaves the backward pass exact.
void exact_where_known(float *out, const int32_t *xt, size_t n_pos, int64_t V, int32_t mask)
{
    at::parallel_for(0, (int64_t)n_pos, 256, [&](int64_t lo, int64_t hi) {
        for (int64_t p = lo; p < hi; p++) {
            float *z = out + p * V;
            if (xt[p] == mask) {
                z[mask] = -INFINITY;
            } else {
                for (int64_t y = 0; y < V; y++) z[y] = -INFINITY;
                z[xt[p]] = 0.0f;
            }
        }
    });
}

struct FlowHost {
    TextNet net{nullptr};
    int64_t L = 0, V = 0;
    int32_t mask = 0;
    torch::Tensor logits;     // the last training forward's output (over libdfm's buffer)
    double model_seconds = 0; // time inside the callbacks (the network's time)
};

torch::Tensor times_of(const dfm_model_io &io, bool wanted)
{
    if (!wanted) return torch::Tensor();
    // The one copy: libdfm's times are double, the network works in float (rows values).
    return torch::from_blob(const_cast<double *>(io.t), {(int64_t)io.rows}, torch::kDouble)
        .to(torch::kFloat);
}

torch::Tensor tokens_of(const dfm_model_io &io)
{
    return torch::from_blob(const_cast<int32_t *>(io.tokens), {(int64_t)io.rows, (int64_t)io.n_tokens},
                            torch::kInt);
}

// Training forward (dfm::trainer::step): autograd on, the logits written into io.out.
void flow_forward(const dfm_model_io &io, FlowHost &h)
{
    double t0 = now();
    torch::Tensor f;
    {
        Autocast ac;
        f = h.net->features(tokens_of(io), times_of(io, h.net->time_cond));
    }
    h.logits = LinearInto::apply(f, h.net->head_w, h.net->head_b, io.out);
    exact_where_known(io.out, io.tokens, io.rows * io.n_tokens, h.V, h.mask);
    h.model_seconds += now() - t0;
}

// Training backward: libdfm's gradient wrt the logits, wrapped in place.
void flow_backward(const dfm_model_io &io, const float *grad, FlowHost &h)
{
    double t0 = now();
    auto g = torch::from_blob(const_cast<float *>(grad), {(int64_t)(io.rows * io.n_tokens), h.V},
                              torch::kFloat);
    h.logits.backward(g);
    h.logits = torch::Tensor();
    h.model_seconds += now() - t0;
}

// Evaluation and sampling: no autograd, the output layer writes into io.out.
void flow_model(const dfm_model_io &io, FlowHost &h)
{
    double t0 = now();
    torch::NoGradGuard ng;
    torch::Tensor f;
    {
        Autocast ac;
        f = h.net->features(tokens_of(io), times_of(io, h.net->time_cond));
    }
    auto y = torch::from_blob(io.out, {f.size(0), h.V}, torch::kFloat);
    torch::addmm_out(y, h.net->head_b, f, h.net->head_w.t());
    exact_where_known(io.out, io.tokens, io.rows * io.n_tokens, h.V, h.mask);
    h.model_seconds += now() - t0;
}

// ---- training ----

// B windows of L characters at uniform offsets of the training text (libdfm's counter-based
// uniforms keyed by the step, so the batches are reproducible).
void draw_windows(const std::vector<int32_t> &text, int64_t L, int64_t B, uint64_t seed,
                  uint32_t stream, uint32_t step, int32_t *out)
{
    const size_t span = text.size() - (size_t)L;
    for (int64_t r = 0; r < B; r++) {
        size_t off = (size_t)(dfm_rng_uniform(seed, stream, (uint64_t)r, 0, step) * (double)span);
        std::memcpy(out + r * L, text.data() + off, (size_t)L * sizeof(int32_t));
    }
}

// Learning rate: linear warm-up over the first 10 steps, then linear decay to 0 at the end of
// the model's training time.
double lr_at(double lr, long step, double elapsed, double budget)
{
    double warm = std::min(1.0, (double)(step + 1) / 10.0);
    return lr * warm * std::max(0.0, 1.0 - elapsed / budget);
}

void set_lr(torch::optim::Adam &opt, double lr)
{
    for (auto &g : opt.param_groups())
        static_cast<torch::optim::AdamOptions &>(g.options()).lr(lr);
}

struct Timing {
    double step = 0, library = 0; // whole training steps; inside libdfm (callbacks excluded)
    long steps = 0;
    double loss_sum = 0;
    long loss_n = 0;
};

void flow_step(FlowHost &h, dfm::trainer &tr, torch::optim::Adam &opt, const Corpus &c,
               const Options &o, Timing &tm, std::vector<int32_t> &x1)
{
    draw_windows(c.train_tok, o.seq_len, o.batch, (uint64_t)o.seed, 11, (uint32_t)tm.steps, x1.data());
    double t0 = now();
    set_lr(opt, lr_at(o.lr, tm.steps, tm.step, o.train_seconds));
    opt.zero_grad();
    dfm_train_args a = {};
    a.rows = (size_t)o.batch;
    a.x1_tokens = x1.data();
    double m0 = h.model_seconds, s0 = now();
    double loss = tr.step([&](const dfm_model_io &io) { flow_forward(io, h); },
                          [&](const dfm_model_io &io, const float *g) { flow_backward(io, g, h); }, a);
    double inside = now() - s0 - (h.model_seconds - m0);
    opt.step();
    tm.step += now() - t0;
    tm.library += inside;
    tm.steps++;
    tm.loss_sum += loss;
    tm.loss_n++;
}

// The AR model reads [start, x_0 .. x_{L-2}] and predicts x_0 .. x_{L-1}; the mask token is
// its start token and is never predicted (logit -inf).
torch::Tensor ar_logits(TextNet &net, const torch::Tensor &inputs, int32_t mask)
{
    torch::Tensor f;
    {
        Autocast ac;
        f = net->features(inputs, torch::Tensor());
    }
    auto z = torch::addmm(net->head_b, f, net->head_w.t());
    return z.index_fill(1, torch::tensor({(int64_t)mask}), -INFINITY);
}

torch::Tensor ar_inputs(const torch::Tensor &x, int32_t mask)
{
    auto start = torch::full({x.size(0), 1}, mask, torch::kInt);
    return torch::cat({start, x.slice(1, 0, x.size(1) - 1)}, 1);
}

void ar_step(TextNet &net, torch::optim::Adam &opt, const Corpus &c, const Options &o,
             Timing &tm, std::vector<int32_t> &x1)
{
    draw_windows(c.train_tok, o.seq_len, o.batch, (uint64_t)o.seed, 12, (uint32_t)tm.steps, x1.data());
    double t0 = now();
    set_lr(opt, lr_at(o.lr, tm.steps, tm.step, o.train_seconds));
    opt.zero_grad();
    auto x = torch::from_blob(x1.data(), {o.batch, o.seq_len}, torch::kInt);
    auto z = ar_logits(net, ar_inputs(x, c.MASK), c.MASK);
    auto loss = torch::nn::functional::cross_entropy(z, x.reshape({-1}).to(torch::kLong));
    loss.backward();
    opt.step();
    tm.step += now() - t0;
    tm.steps++;
    tm.loss_sum += loss.item<double>();
    tm.loss_n++;
}

// ---- evaluation ----

// n windows of L characters spread evenly over the held-out text.
std::vector<int32_t> eval_windows(const Corpus &c, int64_t L, int64_t n)
{
    std::vector<int32_t> w((size_t)(n * L));
    size_t span = c.held_tok.size() - (size_t)L;
    for (int64_t k = 0; k < n; k++) {
        size_t off = n > 1 ? (size_t)((double)span * (double)k / (double)(n - 1)) : 0;
        std::memcpy(w.data() + k * L, c.held_tok.data() + off, (size_t)L * sizeof(int32_t));
    }
    return w;
}

// Held-out negative ELBO (libdfm's estimate per sequence, in nats) in bits per character, and
// the standard error of the mean.
void flow_nelbo(FlowHost &h, dfm::loss &gkl, const std::vector<int32_t> &w, const Options &o,
                double &bpc, double &se)
{
    size_t n = w.size() / (size_t)o.seq_len;
    std::vector<double> nelbo(n), err(n);
    dfm_elbo_args ea = {};
    ea.rows = n;
    ea.draw = 1;
    ea.x1_tokens = w.data();
    ea.n_t = (size_t)o.elbo_times;
    ea.chunk_rows = 32;
    ea.nelbo = nelbo.data();
    ea.std_error = err.data();
    gkl.discrete_elbo([&](const dfm_model_io &io) { flow_model(io, h); }, ea);
    double s = 0, v = 0, k = (double)o.seq_len * std::log(2.0);
    for (size_t r = 0; r < n; r++) { s += nelbo[r]; v += err[r] * err[r]; }
    bpc = s / (double)n / k;
    se = std::sqrt(v) / (double)n / k;
}

double ar_bpc(TextNet &net, const std::vector<int32_t> &w, const Options &o, int32_t mask)
{
    torch::NoGradGuard ng;
    int64_t n = (int64_t)w.size() / o.seq_len;
    auto x = torch::from_blob(const_cast<int32_t *>(w.data()), {n, o.seq_len}, torch::kInt);
    double total = 0;
    for (int64_t r = 0; r < n; r += 32) {
        auto xb = x.slice(0, r, std::min(n, r + 32));
        auto z = ar_logits(net, ar_inputs(xb, mask), mask);
        total += torch::nn::functional::cross_entropy(
                     z, xb.reshape({-1}).to(torch::kLong),
                     torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                     .item<double>();
    }
    return total / (double)(n * o.seq_len) / std::log(2.0);
}

// ---- sampling ----

struct SampleRun {
    std::vector<int32_t> tokens;
    double seconds = 0, library = 0;
    int64_t calls = 0, rows = 0; // model calls, rows sent to the model over the run
};

// The sampler settings compared: options set on a DFM_METHOD_EXACT sampler (docs/discrete.md,
// "Unmasking", "Posterior shaping", "Remasking").
typedef std::function<void(dfm::sampler &)> Setting;
const Setting exact_step = [](dfm::sampler &) {};
const Setting purity = [](dfm::sampler &s) { s.set_int(DFM_OPT_DS_PURITY, 1); };
Setting ordered(int order, int count = DFM_COUNT_SCHEDULE_CEIL)
{
    return [=](dfm::sampler &s) {
        s.set_int(DFM_OPT_DS_ORDER, order);
        s.set_int(DFM_OPT_DS_COUNT, count);
    };
}
const Setting confidence_top_p = [](dfm::sampler &s) {
    ordered(DFM_ORDER_CONFIDENCE)(s);
    s.set_double(DFM_OPT_DS_TOP_P, 0.9);
};
const Setting blocks = [](dfm::sampler &s) { // LLaDA: blocks of 32 left to right
    ordered(DFM_ORDER_CONFIDENCE)(s);
    s.set_int(DFM_OPT_DS_BLOCK_LEN, 32);
};
const Setting threshold = [](dfm::sampler &s) { // Fast-dLLM: every position above 0.9
    ordered(DFM_ORDER_CONFIDENCE, DFM_COUNT_THRESHOLD)(s);
    s.set_double(DFM_OPT_DS_THRESHOLD, 0.9);
};
const Setting remask = [](dfm::sampler &s) { // ReMDM, max-capped at eta = 0.02
    s.set_int(DFM_OPT_DS_REMASK, DFM_REMASK_CAP);
    s.set_double(DFM_OPT_DS_REMASK_ETA, 0.02);
};

struct NamedSetting {
    std::string name;
    int64_t steps;
    Setting setting;
};

// The table: the exact step at every budget; at the budget nearest a quarter of the largest,
// every order and count, top-p, blocks, the threshold and remasking; at the largest, purity and
// the confidence order.
std::vector<NamedSetting> sampler_settings(const Options &o)
{
    std::vector<NamedSetting> v;
    const int64_t top = o.budgets.back();
    int64_t quarter = o.budgets.front();
    for (long b : o.budgets)
        if (std::labs(b - top / 4) < std::labs(quarter - top / 4)) quarter = b;
    for (long b : o.budgets) {
        v.push_back({"exact step", b, exact_step});
        if (b == quarter && b != top) {
            v.push_back({"confidence, even split", b, ordered(DFM_ORDER_CONFIDENCE)});
            v.push_back({"margin, even split", b, ordered(DFM_ORDER_MARGIN)});
            v.push_back({"entropy, even split", b, ordered(DFM_ORDER_ENTROPY)});
            v.push_back({"confidence, top-p 0.9", b, confidence_top_p});
            if (b * 32 >= o.seq_len) v.push_back({"blocks of 32, confidence", b, blocks});
            v.push_back({"threshold 0.9 (Fast-dLLM)", b, threshold});
            v.push_back({"remasking (ReMDM cap 0.02)", b, remask});
        }
    }
    v.push_back({"purity", top, purity});
    v.push_back({"confidence, even split", top, ordered(DFM_ORDER_CONFIDENCE)});
    return v;
}

SampleRun flow_sample(FlowHost &h, const dfm::generator &gen, const Options &o, int64_t N,
                      int64_t steps, const Setting &setting, const std::vector<uint8_t> *fixed,
                      const std::vector<int32_t> *prompt, std::vector<double> *save_times = nullptr,
                      std::vector<int32_t> *saved = nullptr)
{
    dfm::sampler s(gen, DFM_METHOD_EXACT);
    s.set_steps((size_t)steps);
    s.set_int(DFM_OPT_SEED, o.seed);
    s.set_int(DFM_OPT_THREADS, 1);
    setting(s);
    // the network ignores t (MDLM): rows that did not change are not sent again
    if (!h.net->time_cond) s.set_int(DFM_OPT_DS_TIME_INDEPENDENT, 1);
    SampleRun r;
    r.tokens.assign((size_t)(N * o.seq_len), h.mask);
    if (prompt) r.tokens = *prompt;
    dfm_run_args a;
    std::memset(&a, 0, sizeof a);
    a.rows = (size_t)N;
    a.tokens = r.tokens.data();
    a.draw_source = prompt ? 0 : 1;
    a.fixed = fixed ? fixed->data() : nullptr;
    if (save_times) {
        saved->assign(save_times->size() * r.tokens.size(), 0);
        a.save_times = save_times->data();
        a.n_save = save_times->size();
        a.saved_tokens = saved->data();
    }
    double m0 = h.model_seconds, t0 = now();
    s.run([&](const dfm_model_io &io) { flow_model(io, h); }, a);
    r.seconds = now() - t0;
    r.library = r.seconds - (h.model_seconds - m0);
    r.calls = s.stat(DFM_STAT_MODEL_CALLS);
    r.rows = s.stat(DFM_STAT_MODEL_ROWS);
    return r;
}

// N samples of the AR model, one character per model call (L calls), at its own distribution.
SampleRun ar_sample(TextNet &net, const Options &o, int32_t mask, int64_t N)
{
    torch::NoGradGuard ng;
    torch::manual_seed((uint64_t)o.seed + 7);
    SampleRun r;
    double t0 = now();
    auto seq = torch::full({N, 1}, mask, torch::kInt);
    for (int64_t i = 0; i < o.seq_len; i++) {
        auto z = ar_logits(net, seq, mask).view({N, i + 1, -1}).select(1, i);
        auto next = torch::multinomial(torch::softmax(z, -1), 1).to(torch::kInt);
        seq = torch::cat({seq, next}, 1);
        r.calls++;
    }
    auto x = seq.slice(1, 1, o.seq_len + 1).contiguous();
    r.tokens.assign(x.data_ptr<int32_t>(), x.data_ptr<int32_t>() + N * o.seq_len);
    r.seconds = now() - t0;
    return r;
}

std::vector<std::string> texts(const Corpus &c, const std::vector<int32_t> &tok, int64_t L)
{
    std::vector<std::string> out;
    for (size_t r = 0; r * (size_t)L < tok.size(); r++) {
        std::string s;
        for (int64_t i = 0; i < L; i++) {
            int k = tok[r * (size_t)L + (size_t)i];
            s.push_back(k >= 0 && k < c.MASK ? c.chars[(size_t)k] : '_');
        }
        out.push_back(s);
    }
    return out;
}

void print_stats_row(const char *name, int64_t calls, double rows, const TextStats &st,
                     double seconds, double lib_share)
{
    std::printf("  %-40s %6lld %6.1f %7.3f %6zu %7.3f %7.3f %8.1f %7.4f\n", name, (long long)calls,
                rows, st.valid_rate, st.words, st.distinct[2], st.distinct[3], seconds, lib_share);
}

} // namespace

namespace {

// libgomp reads OMP_WAIT_POLICY when it is loaded, before main: an OpenMP thread that spins
// while its core is shared with other work stalls the step (measured 3-5x slower on a loaded
// 2-core machine). The program re-executes itself once with the passive policy unless the
// variable is set.
void passive_openmp(char **argv)
{
    if (std::getenv("OMP_WAIT_POLICY")) return;
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);
    // execv failed (no /proc): run on with libgomp's default policy
}

struct Flow {
    dfm::space space;
    dfm::scheduler sched;
    dfm::path path;
    dfm::generator gen;
    dfm::loss gkl, train_loss;
    Flow(int32_t V, int64_t L, int32_t mask, int loss_kind)
        : space(dfm::space::discrete(V, (size_t)L)), sched(dfm::scheduler::condot()),
          path(dfm::path::mixture(space, sched, DFM_SOURCE_MASK, mask)),
          gen(dfm::generator::factorized(path, DFM_PARAM_LOGITS)),
          gkl(dfm::loss::generalized_kl(path)),
          train_loss(loss_kind == 0 ? dfm::loss::generalized_kl(path)
                                    : dfm::loss::cross_entropy(path, true))
    {
    }
};

// Stratified times over the batch; libdfm's own work runs on the calling thread (it is a small
// share of the step, and a second libdfm thread would compete with torch's).
dfm::trainer make_trainer(const Flow &f, const Options &o)
{
    dfm::trainer tr(f.path, f.train_loss);
    tr.set_int(DFM_OPT_GM_TIME_KIND, DFM_TIME_STRATIFIED);
    tr.set_double(DFM_OPT_GM_TIME_EPS, o.eps);
    tr.set_int(DFM_OPT_SEED, o.seed);
    tr.set_int(DFM_OPT_THREADS, 1);
    return tr;
}

void train_both(FlowHost &h, dfm::trainer &tr, TextNet &ar, const Corpus &c, const Options &o,
                Timing &ft, Timing &at)
{
    torch::optim::Adam fopt(h.net->parameters(), torch::optim::AdamOptions(o.lr).betas({0.9, 0.99}));
    torch::optim::Adam aopt(ar->parameters(), torch::optim::AdamOptions(o.lr).betas({0.9, 0.99}));
    std::vector<int32_t> x1((size_t)(o.batch * o.seq_len));
    const double ln2 = std::log(2.0), t0 = now();
    // One step each in turn, the one behind in training time first, until both used theirs.
    while (ft.step < o.train_seconds || at.step < o.train_seconds) {
        bool flow_next = at.step >= o.train_seconds || (ft.step <= at.step && ft.step < o.train_seconds);
        if (flow_next) flow_step(h, tr, fopt, c, o, ft, x1);
        else ar_step(ar, aopt, c, o, at, x1);
        if (flow_next && ft.steps % o.log_every == 0) {
            std::printf("step %5ld  flow loss %.3f%s  ar %.3f bpc (%ld steps)  train %.0f s + %.0f s  "
                        "wall %.0f s  load %.2f\n",
                        ft.steps, ft.loss_sum / (double)ft.loss_n / (o.loss == 0 ? ln2 : 1.0),
                        o.loss == 0 ? " bpc" : " nats", at.loss_n ? at.loss_sum / (double)at.loss_n / ln2 : 0.0,
                        at.steps, ft.step, at.step, now() - t0, loadavg());
            std::fflush(stdout);
            ft.loss_sum = at.loss_sum = 0;
            ft.loss_n = at.loss_n = 0;
        }
    }
}

// The unmasking order of one sample of the purity sampler (the most confident positions first;
// with the exact step the order is uniformly random by construction): snapshots at a quarter,
// half and three quarters of the run, then the text with the tenth of the run in which each
// character was revealed.
void show_unmasking(FlowHost &h, const Flow &f, const Corpus &c, const Options &o)
{
    const int64_t steps = 32, L = o.seq_len;
    std::vector<double> st;
    for (int64_t k = 1; k < steps; k++) st.push_back(((double)k + 0.5) / (double)steps);
    std::vector<int32_t> saved;
    SampleRun r = flow_sample(h, f.gen, o, 1, steps, purity, nullptr, nullptr, &st, &saved);
    std::printf("unmasking order (purity, %lld steps; _ = still masked, | = end of a fortune):\n",
                (long long)steps);
    for (int64_t q = 1; q <= 3; q++) {
        int64_t k = q * steps / 4 - 1; // state after q/4 of the steps
        std::printf("  t=%.2f  %s\n", (double)(k + 1) / (double)steps,
                    decode(c, saved.data() + k * L, (size_t)L).c_str());
    }
    std::printf("  t=1.00  %s\n", decode(c, r.tokens.data(), (size_t)L).c_str());
    std::string order;
    for (int64_t i = 0; i < L; i++) {
        int64_t k = 0;
        while (k < steps - 1 && saved[(size_t)(k * L + i)] == h.mask) k++;
        order.push_back((char)('0' + std::min<int64_t>(9, k * 10 / steps)));
    }
    std::printf("  tenth   %s\n", order.c_str());
}

// Infilling: held-out windows with the first and last quarter given (fixed positions), the
// middle half sampled. Stats on the middle half only.
void infill(FlowHost &h, const Flow &f, const Corpus &c, const Options &o,
            const std::vector<int32_t> &held, const Dictionary &dict, double &seconds, double &lib)
{
    const int64_t L = o.seq_len, N = std::min<int64_t>(o.samples, (int64_t)held.size() / L);
    const int64_t a = L / 4, b = L - L / 4;
    std::vector<int32_t> prompt(held.begin(), held.begin() + N * L);
    std::vector<uint8_t> fixed((size_t)(N * L), 0);
    for (int64_t r = 0; r < N; r++)
        for (int64_t i = 0; i < L; i++) {
            bool given = i < a || i >= b;
            fixed[(size_t)(r * L + i)] = given;
            if (!given) prompt[(size_t)(r * L + i)] = h.mask;
        }
    SampleRun s = flow_sample(h, f.gen, o, N, o.infill_steps, exact_step, &fixed, &prompt);
    std::vector<std::string> mid, ref;
    std::vector<std::string> all = texts(c, s.tokens, L), orig = texts(c, prompt, L);
    std::vector<int32_t> truth(held.begin(), held.begin() + N * L);
    std::vector<std::string> tr = texts(c, truth, L);
    for (int64_t r = 0; r < N; r++) {
        mid.push_back(all[(size_t)r].substr((size_t)a, (size_t)(b - a)));
        ref.push_back(tr[(size_t)r].substr((size_t)a, (size_t)(b - a)));
    }
    TextStats si = text_stats(mid, dict), sr = text_stats(ref, dict);
    std::printf("infilling (first and last %lld characters given, %lld steps):\n", (long long)a,
                (long long)o.infill_steps);
    for (int64_t r = 0; r < std::min<int64_t>(N, 3); r++) {
        std::printf("  prompt  %s\n", decode(c, prompt.data() + r * L, (size_t)L).c_str());
        std::printf("  filled  %s\n", decode(c, s.tokens.data() + r * L, (size_t)L).c_str());
    }
    std::printf("infill: valid_word_rate=%.3f (the held-out text there: %.3f) words=%zu\n",
                si.valid_rate, sr.valid_rate, si.words);
    seconds += s.seconds;
    lib += s.library;
}

struct SampleReport {
    TextStats flow, ar, data; // the flow at the largest budget (exact step), AR, held-out text
    double seconds = 0, library = 0;
};

// Samples of every setting and budget, the AR model's, infilling and the unmasking figure.
SampleReport sample_all(FlowHost &h, const Flow &f, TextNet &ar, const Corpus &c, const Options &o,
                        const std::vector<int32_t> &held, const Dictionary &dict)
{
    const int64_t L = o.seq_len;
    SampleReport rep;
    rep.data = text_stats(texts(c, held, L), dict);
    std::printf("sampling (%ld samples each; rows: model rows per sample, calls x rows sent / "
                "samples):\n  %-40s %6s %6s %7s %6s %7s %7s %8s %7s\n",
                o.samples, "sampler", "calls", "rows", "valid", "words", "dist-2", "dist-3",
                "seconds", "lib");
    print_stats_row("held-out text", 0, 0.0, rep.data, 0.0, 0.0);
    std::vector<int32_t> shown;
    for (const NamedSetting &ns : sampler_settings(o)) {
        SampleRun r = flow_sample(h, f.gen, o, o.samples, ns.steps, ns.setting, nullptr, nullptr);
        TextStats ts = text_stats(texts(c, r.tokens, L), dict);
        std::string name = "flow " + ns.name + ", " + std::to_string(ns.steps) + " steps";
        print_stats_row(name.c_str(), r.calls, (double)r.rows / (double)o.samples, ts, r.seconds,
                        r.library / r.seconds);
        std::fflush(stdout);
        rep.seconds += r.seconds;
        rep.library += r.library;
        if (ns.steps == o.budgets.back() && shown.empty()) { rep.flow = ts; shown = r.tokens; }
    }
    SampleRun ars = ar_sample(ar, o, c.MASK, o.samples);
    rep.ar = text_stats(texts(c, ars.tokens, L), dict);
    print_stats_row("AR (one character per call)", ars.calls, (double)ars.calls, rep.ar,
                    ars.seconds, 0.0);
    std::printf("samples (flow, %ld steps):\n", o.budgets.back());
    for (int64_t r = 0; r < std::min<int64_t>(3, o.samples); r++)
        std::printf("  %s\n", decode(c, shown.data() + r * L, (size_t)L).c_str());
    std::printf("samples (AR):\n");
    for (int64_t r = 0; r < std::min<int64_t>(3, o.samples); r++)
        std::printf("  %s\n", decode(c, ars.tokens.data() + r * L, (size_t)L).c_str());
    infill(h, f, c, o, held, dict, rep.seconds, rep.library);
    show_unmasking(h, f, c, o);
    return rep;
}

int run(const Options &o)
{
    const double t_start = now();
    torch::set_num_threads((int)o.threads);
    use_bf16 = o.bf16 < 0 ? cpu_has_bf16() : o.bf16 == 1;
    torch::manual_seed((uint64_t)o.seed);
    Corpus c = load_corpus(o.corpus);
    Dictionary dict = load_dictionary(o.dict);
    const int64_t L = o.seq_len;
    std::printf("text_dfm: %zu fortunes from %zu files of %s: %zu characters for training, %zu held "
                "out (every tenth fortune; %zu held-out characters outside the vocabulary "
                "dropped); %d characters + mask\n",
                c.fortunes, c.files, o.corpus.c_str(), c.train_tok.size(), c.held_tok.size(),
                c.dropped, c.V - 1);

    Flow f(c.V, L, c.MASK, o.loss);
    dfm::trainer tr = make_trainer(f, o);
    FlowHost h;
    h.net = TextNet(c.V, L, o.width, o.layers, o.heads, false, o.time_cond != 0);
    h.L = L;
    h.V = c.V;
    h.mask = c.MASK;
    TextNet ar(c.V, L, o.width, o.layers, o.heads, true, false);
    size_t params = 0;
    for (auto &p : h.net->parameters()) params += (size_t)p.numel();
    std::printf("model: transformer %ld x %ld, %ld heads, sequence %lld, %zu parameters; time "
                "conditioning %s; %s loss; batch %ld, lr %g; %s; %ld torch thread(s); %.0f s "
                "of training per model; load %.2f\n",
                o.layers, o.width, o.heads, (long long)L, params, o.time_cond ? "on" : "off",
                o.loss ? "cross-entropy (masked characters)" : "generalized-KL (ELBO)", o.batch,
                o.lr, use_bf16 ? "bfloat16 autocast" : "float32", o.threads, o.train_seconds, loadavg());
    std::fflush(stdout);

    // 1. Training: the flow through dfm_trainer_step, the AR model with torch alone.
    Timing ft, at;
    train_both(h, tr, ar, c, o, ft, at);
    h.net->eval();
    ar->eval();
    const double lib_share = ft.library / ft.step;
    std::printf("trained: flow %ld steps in %.1f s (inside libdfm %.3f s = %.2f%% of the step), "
                "AR %ld steps in %.1f s\n",
                ft.steps, ft.step, ft.library, 100.0 * lib_share, at.steps, at.step);

    // 2. Held-out likelihood.
    double t_eval = now(), nelbo, nelbo_se;
    std::vector<int32_t> held = eval_windows(c, L, o.eval_windows);
    flow_nelbo(h, f.gkl, held, o, nelbo, nelbo_se);
    double arbpc = ar_bpc(ar, held, o, c.MASK);
    std::printf("held-out (%ld windows of %lld): flow negative ELBO %.3f +- %.3f bits/char, AR %.3f "
                "bits/char (%.1f s)\n",
                o.eval_windows, (long long)L, nelbo, nelbo_se, arbpc, now() - t_eval);

    // 3. Samples and their words.
    SampleReport rep = sample_all(h, f, ar, c, o, held, dict);
    std::printf("details: sample_library_share=%.4f flow_steps=%ld ar_steps=%ld "
                "data_valid_word_rate=%.3f distinct2=%.3f ar_distinct2=%.3f nelbo_se=%.3f "
                "load=%.2f wall=%.1f\n",
                rep.library / rep.seconds, ft.steps, at.steps, rep.data.valid_rate,
                rep.flow.distinct[2], rep.ar.distinct[2], nelbo_se, loadavg(), now() - t_start);
    std::printf("result: nelbo_bpc=%.3f ar_bpc=%.3f valid_word_rate=%.3f ar_valid_word_rate=%.3f "
                "library_share=%.4f train_seconds=%.1f\n",
                nelbo, arbpc, rep.flow.valid_rate, rep.ar.valid_rate, lib_share, ft.step);
    return 0;
}

} // namespace

int main(int argc, char **argv)
{
    passive_openmp(argv);
    const Options o = parse_options(argc, argv);
    try {
        return run(o);
    } catch (const std::exception &e) { // dfm::error (with libdfm's message) or torch's
        die(e.what());
    }
}

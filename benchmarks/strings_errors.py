"""Where a strings model's errors are: a wrong length, or a wrong digit at the right length.

    python benchmarks/strings_errors.py RUN_DIR [--split valid] [--size 3000]

For each true length 1-5: the string error, the part of it read at the wrong
length and the part read at the right length with a digit wrong, and how many
strings were read at each length; then each position's digit error among the
strings read at their right length. Prints a markdown table. Used for
docs/findings.md, "Where the strings model's errors are".
"""

import argparse

import numpy as np

from lstm_stn_tf.errors import UserError
from lstm_stn_tf.evaluation import load_model, model_split, predict_probabilities
from lstm_stn_tf.strings import END_CLASS, decode_strings, string_lengths


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a strings run directory (its config.json says the benchmark)")
    parser.add_argument("--split", default="valid", choices=("train", "valid", "test"))
    parser.add_argument("--size", type=int, default=3000)
    args = parser.parse_args()
    try:
        model = load_model(args.run_dir)
        images, labels = model_split(args.run_dir, model, args.split, args.size)
    except UserError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    read = decode_strings(predict_probabilities(model, images))
    lengths, read_lengths = string_lengths(labels), string_lengths(read)
    wrong = np.any(read != labels, axis=1)
    right_length = read_lengths == lengths
    longest = labels.shape[1]
    print(f"{args.split}, {len(labels)} images: string error {wrong.mean():.2%}, "
          f"length accuracy {right_length.mean():.2%}\n")
    print("| length | images | string error | wrong length | right length, a digit wrong | lengths read (0-5) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in range(1, longest + 1):
        of_n = lengths == n
        read_counts = np.bincount(read_lengths[of_n], minlength=longest + 1)
        print(f"| {n} | {of_n.sum()} | {wrong[of_n].mean():.1%} | {(~right_length[of_n]).mean():.1%} | "
              f"{(wrong & right_length)[of_n].mean():.1%} | {', '.join(map(str, read_counts))} |")
    digits = labels[right_length] != END_CLASS
    digit_wrong = (read[right_length] != labels[right_length]) & digits
    per_position = digit_wrong.sum(axis=0) / np.maximum(digits.sum(axis=0), 1)
    print("\ndigit error by position, strings read at their right length: "
          + ", ".join(f"{error:.1%}" for error in per_position))


if __name__ == "__main__":
    main()

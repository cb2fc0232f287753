"""Ask a fine-tuned adapter questions: ``python examples/ask.py ADAPTER_DIR BASE_DIR "question" ...``."""

from __future__ import annotations

import sys


def main() -> None:
    adapter_dir, base_dir, *questions = sys.argv[1:]
    import warnings

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    hf_logging.disable_progress_bar()

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval()
    for question in questions:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
        answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        print(f"Q: {question}\nA: {answer.strip()}")


if __name__ == "__main__":
    main()

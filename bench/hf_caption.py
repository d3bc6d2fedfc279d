"""The plain HF script a new user would write (the whole-process benchmark's reference): caption image files."""

import sys

import PIL.Image
import torch
from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

folder, batch, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
model = VisionEncoderDecoderModel.from_pretrained(folder).eval()
processor, tokenizer = AutoImageProcessor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
with torch.inference_mode():
    for start in range(0, len(paths), batch):
        images = [PIL.Image.open(p).convert("RGB") for p in paths[start : start + batch]]
        ids = model.generate(pixel_values=processor(images=images, return_tensors="pt").pixel_values)
        for path, caption in zip(paths[start : start + batch], tokenizer.batch_decode(ids, skip_special_tokens=True)):
            print(path, caption, sep="\t", flush=True)

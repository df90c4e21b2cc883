"""The official SQuAD evaluation scripts: the independent reference for
electra_jax.finetune.squad_metrics.

Verbatim from https://rajpurkar.github.io/SQuAD-explorer/ (evaluate-v1.1.py and
evaluate-v2.0.py; CC BY-SA 4.0 / the SQuAD release), printing and file handling left out,
each script's functions gathered in one class. Not linted or formatted: it stays as
published.
"""
import collections
import re
import string


class OfficialV1:
    @staticmethod
    def normalize_answer(s):
        def remove_articles(text):
            return re.sub(r'\b(a|an|the)\b', ' ', text)

        def white_space_fix(text):
            return ' '.join(text.split())

        def remove_punc(text):
            exclude = set(string.punctuation)
            return ''.join(ch for ch in text if ch not in exclude)

        def lower(text):
            return text.lower()

        return white_space_fix(remove_articles(remove_punc(lower(s))))

    @classmethod
    def f1_score(cls, prediction, ground_truth):
        prediction_tokens = cls.normalize_answer(prediction).split()
        ground_truth_tokens = cls.normalize_answer(ground_truth).split()
        common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
        num_same = sum(common.values())
        if num_same == 0:
            return 0
        precision = 1.0 * num_same / len(prediction_tokens)
        recall = 1.0 * num_same / len(ground_truth_tokens)
        f1 = (2 * precision * recall) / (precision + recall)
        return f1

    @classmethod
    def exact_match_score(cls, prediction, ground_truth):
        return (cls.normalize_answer(prediction) == cls.normalize_answer(ground_truth))

    @staticmethod
    def metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
        scores_for_ground_truths = []
        for ground_truth in ground_truths:
            score = metric_fn(prediction, ground_truth)
            scores_for_ground_truths.append(score)
        return max(scores_for_ground_truths)

    @classmethod
    def evaluate(cls, dataset, predictions):
        f1 = exact_match = total = 0
        for article in dataset:
            for paragraph in article['paragraphs']:
                for qa in paragraph['qas']:
                    total += 1
                    if qa['id'] not in predictions:
                        continue
                    ground_truths = list(map(lambda x: x['text'], qa['answers']))
                    prediction = predictions[qa['id']]
                    exact_match += cls.metric_max_over_ground_truths(
                        cls.exact_match_score, prediction, ground_truths)
                    f1 += cls.metric_max_over_ground_truths(
                        cls.f1_score, prediction, ground_truths)
        exact_match = 100.0 * exact_match / total
        f1 = 100.0 * f1 / total
        return {'exact_match': exact_match, 'f1': f1}


class OfficialV2:
    @staticmethod
    def make_qid_to_has_ans(dataset):
        qid_to_has_ans = {}
        for article in dataset:
            for p in article['paragraphs']:
                for qa in p['qas']:
                    qid_to_has_ans[qa['id']] = bool(qa['answers'])
        return qid_to_has_ans

    @staticmethod
    def normalize_answer(s):
        def remove_articles(text):
            regex = re.compile(r'\b(a|an|the)\b', re.UNICODE)
            return re.sub(regex, ' ', text)

        def white_space_fix(text):
            return ' '.join(text.split())

        def remove_punc(text):
            exclude = set(string.punctuation)
            return ''.join(ch for ch in text if ch not in exclude)

        def lower(text):
            return text.lower()

        return white_space_fix(remove_articles(remove_punc(lower(s))))

    @classmethod
    def get_tokens(cls, s):
        if not s:
            return []
        return cls.normalize_answer(s).split()

    @classmethod
    def compute_exact(cls, a_gold, a_pred):
        return int(cls.normalize_answer(a_gold) == cls.normalize_answer(a_pred))

    @classmethod
    def compute_f1(cls, a_gold, a_pred):
        gold_toks = cls.get_tokens(a_gold)
        pred_toks = cls.get_tokens(a_pred)
        common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
        num_same = sum(common.values())
        if len(gold_toks) == 0 or len(pred_toks) == 0:
            return int(gold_toks == pred_toks)
        if num_same == 0:
            return 0
        precision = 1.0 * num_same / len(pred_toks)
        recall = 1.0 * num_same / len(gold_toks)
        f1 = (2 * precision * recall) / (precision + recall)
        return f1

    @classmethod
    def get_raw_scores(cls, dataset, preds):
        exact_scores = {}
        f1_scores = {}
        for article in dataset:
            for p in article['paragraphs']:
                for qa in p['qas']:
                    qid = qa['id']
                    gold_answers = [a['text'] for a in qa['answers'] if cls.normalize_answer(a['text'])]
                    if not gold_answers:
                        gold_answers = ['']
                    if qid not in preds:
                        continue
                    a_pred = preds[qid]
                    exact_scores[qid] = max(cls.compute_exact(a, a_pred) for a in gold_answers)
                    f1_scores[qid] = max(cls.compute_f1(a, a_pred) for a in gold_answers)
        return exact_scores, f1_scores

    @staticmethod
    def apply_no_ans_threshold(scores, na_probs, qid_to_has_ans, na_prob_thresh):
        new_scores = {}
        for qid, s in scores.items():
            pred_na = na_probs[qid] > na_prob_thresh
            if pred_na:
                new_scores[qid] = float(not qid_to_has_ans[qid])
            else:
                new_scores[qid] = s
        return new_scores

    @staticmethod
    def make_eval_dict(exact_scores, f1_scores, qid_list=None):
        if not qid_list:
            total = len(exact_scores)
            return collections.OrderedDict([
                ('exact', 100.0 * sum(exact_scores.values()) / total),
                ('f1', 100.0 * sum(f1_scores.values()) / total),
                ('total', total),
            ])
        else:
            total = len(qid_list)
            return collections.OrderedDict([
                ('exact', 100.0 * sum(exact_scores[k] for k in qid_list) / total),
                ('f1', 100.0 * sum(f1_scores[k] for k in qid_list) / total),
                ('total', total),
            ])

    @staticmethod
    def merge_eval(main_eval, new_eval, prefix):
        for k in new_eval:
            main_eval['%s_%s' % (prefix, k)] = new_eval[k]

    @staticmethod
    def find_best_thresh(preds, scores, na_probs, qid_to_has_ans):
        num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
        cur_score = num_no_ans
        best_score = cur_score
        best_thresh = 0.0
        qid_list = sorted(na_probs, key=lambda k: na_probs[k])
        for i, qid in enumerate(qid_list):
            if qid not in scores:
                continue
            if qid_to_has_ans[qid]:
                diff = scores[qid]
            else:
                if preds[qid]:
                    diff = -1
                else:
                    diff = 0
            cur_score += diff
            if cur_score > best_score:
                best_score = cur_score
                best_thresh = na_probs[qid]
        return 100.0 * best_score / len(scores), best_thresh

    @classmethod
    def main(cls, dataset, preds, na_probs=None, na_prob_thresh=1.0):
        """evaluate-v2.0.py's main() on in-memory inputs."""
        has_na_file = na_probs is not None
        if not has_na_file:
            na_probs = {k: 0.0 for k in preds}
        qid_to_has_ans = cls.make_qid_to_has_ans(dataset)
        has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
        no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
        exact_raw, f1_raw = cls.get_raw_scores(dataset, preds)
        exact_thresh = cls.apply_no_ans_threshold(exact_raw, na_probs, qid_to_has_ans, na_prob_thresh)
        f1_thresh = cls.apply_no_ans_threshold(f1_raw, na_probs, qid_to_has_ans, na_prob_thresh)
        out_eval = cls.make_eval_dict(exact_thresh, f1_thresh)
        if has_ans_qids:
            cls.merge_eval(out_eval, cls.make_eval_dict(exact_thresh, f1_thresh, qid_list=has_ans_qids), 'HasAns')
        if no_ans_qids:
            cls.merge_eval(out_eval, cls.make_eval_dict(exact_thresh, f1_thresh, qid_list=no_ans_qids), 'NoAns')
        if has_na_file:
            best_exact, exact_thresh = cls.find_best_thresh(preds, exact_raw, na_probs, qid_to_has_ans)
            best_f1, f1_thresh = cls.find_best_thresh(preds, f1_raw, na_probs, qid_to_has_ans)
            out_eval['best_exact'] = best_exact
            out_eval['best_exact_thresh'] = exact_thresh
            out_eval['best_f1'] = best_f1
            out_eval['best_f1_thresh'] = f1_thresh
        return dict(out_eval)

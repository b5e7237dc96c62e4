//! The ResourceManager's replies and `yarn-site.xml`. The input's first line is the task's tag;
//! the rest is a reply body (or the XML).
#![no_main]

use libfuzzer_sys::fuzz_target;
use spark_activity_worker::yarn;
use spark_activity_worker_fuzz::assert_message;

fuzz_target!(|data: &[u8]| {
    let (tag, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let tag = String::from_utf8_lossy(tag);

    if let Ok(apps) = yarn::parse_apps(body, &tag) {
        let want = tag.to_ascii_lowercase();
        for app in &apps {
            assert!(
                app.application_tags.split(',').any(|t| t.trim() == want),
                "{:?} does not carry {want:?}",
                app.application_tags
            );
        }
        let picked = yarn::pick(apps.clone());
        assert_eq!(picked.is_some(), !apps.is_empty());
        if let Some(p) = picked {
            // A running app speaks for the task before any finished one; the latest among equals.
            for a in &apps {
                assert!(
                    (!p.is_final(), p.started_time) >= (!a.is_final(), a.started_time),
                    "picked {p:?} over {a:?}"
                );
            }
        }
    }

    if let Ok(app) = yarn::parse_app(body) {
        assert_eq!(
            app.verdict().is_some(),
            app.is_final(),
            "a verdict without a final state, or none for one: {app:?}"
        );
    }

    let text = String::from_utf8_lossy(body);
    assert_message(&yarn::remote_message(&text), &text);

    if let Some(urls) = yarn::addresses(&text, "this-host") {
        for u in urls {
            assert!(
                matches!(u.scheme(), "http" | "https"),
                "{u} from {text:?}"
            );
        }
    }
});
